//! Times the ONNX reverse segmenter (`OnnxReverse`, a UniverSeg-contract graph through ort) on the
//! configured execution provider (issue 4): ms per query at S supports, and one full-protocol pseudo
//! metric (`reps` calls of `segment`, each with `queries` queries and a fresh random support subset).
//! Synthetic smooth images: no data needed.
//!
//!   cargo build --release --bench gpu_universeg     # -> target/release/deps/gpu_universeg-HASH
//!   SPE_ORT_LIB=/path/libonnxruntime.so.1.31.1 gpu_universeg --model universeg.onnx [--batch 8,16]
//!   SPE_PROVIDER=cpu gpu_universeg --model x.onnx --supports 2 --queries 3 --reps 1 --timed-queries 2
//!
//! Flags (the first three also from environment variables; flags win):
//!   --model PATH          SPE_BENCH_MODEL   (or the first bare argument)
//!   --provider P          SPE_PROVIDER      cpu | cuda | tensorrt, default cuda; the provider is required:
//!                                           the bench fails rather than silently timing the CPU
//!   --batch N[,N...]      SPE_BENCH_BATCH   queries per ONNX run, default 8; several values = several runs
//!   --supports S          default 64        --queries Q   default 172     --reps R   default 6
//!   --timed-queries N     queries per timed `segment` call for ms/query, default 128 (rounded up to a
//!                         multiple of the batch)           --timed-rounds K   default 5 (0 = skip)
//!   --warmup W            full `segment` calls (Q queries) before timing, default 2
//!   --threads T           intra-op threads (0 = ONNX Runtime default)
//!   --threshold X         default 0.4
//!   --dump DIR            before timing (first batch size only), segment the first --dump-queries N
//!                         (default 16) queries and write the support set, the queries and their masks
//!                         as .npy to DIR (checked by tools/torch_universeg_bench.py --rust-dump DIR)
//! Logging: RUST_LOG (default `info,ort::logging=warn`: ONNX Runtime's own warnings, such as nodes it did
//! not place on the requested provider, still show).

use ndarray::{Array2, ArrayView2};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spe::engine::{Mask, ReverseSegmenter, SupportSet, SIDE};
use spe::inference::{ExecutionProvider, OnnxReverse, OnnxReverseParams, Runtime, RuntimeConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Args {
    model: Option<PathBuf>,
    provider: ExecutionProvider,
    batches: Vec<usize>,
    supports: usize,
    queries: usize,
    reps: usize,
    timed_queries: usize,
    timed_rounds: usize,
    warmup: usize,
    threads: usize,
    threshold: f32,
    dump: Option<PathBuf>,
    dump_queries: usize,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("gpu_universeg: {msg}");
    std::process::exit(2)
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> T {
    v.trim()
        .parse()
        .unwrap_or_else(|_| fail(format!("{flag}: cannot parse {v:?}")))
}

fn parse_args() -> Args {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let provider = env("SPE_PROVIDER").unwrap_or_else(|| "cuda".into());
    let batches = env("SPE_BENCH_BATCH").unwrap_or_else(|| "8".into());
    let mut a = Args {
        model: env("SPE_BENCH_MODEL").map(PathBuf::from),
        provider: provider.parse().unwrap_or_else(|e| fail(e)),
        batches: batches
            .split(',')
            .map(|b| num("SPE_BENCH_BATCH", b))
            .collect(),
        supports: 64,
        queries: 172,
        reps: 6,
        timed_queries: 128,
        timed_rounds: 5,
        warmup: 2,
        threads: 0,
        threshold: 0.4,
        dump: None,
        dump_queries: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue; // cargo bench passes it
        }
        if !flag.starts_with("--") {
            a.model = Some(PathBuf::from(flag));
            continue;
        }
        let v = it
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value")));
        match flag.as_str() {
            "--model" => a.model = Some(PathBuf::from(v)),
            "--provider" => a.provider = v.parse().unwrap_or_else(|e| fail(e)),
            "--batch" => a.batches = v.split(',').map(|b| num(&flag, b)).collect(),
            "--supports" => a.supports = num(&flag, &v),
            "--queries" => a.queries = num(&flag, &v),
            "--reps" => a.reps = num(&flag, &v),
            "--timed-queries" => a.timed_queries = num(&flag, &v),
            "--timed-rounds" => a.timed_rounds = num(&flag, &v),
            "--warmup" => a.warmup = num(&flag, &v),
            "--threads" => a.threads = num(&flag, &v),
            "--threshold" => a.threshold = num(&flag, &v),
            "--dump" => a.dump = Some(PathBuf::from(v)),
            "--dump-queries" => a.dump_queries = num(&flag, &v),
            _ => fail(format!("unknown flag {flag}")),
        }
    }
    if a.model.is_none() {
        fail("no model: pass --model PATH (or set SPE_BENCH_MODEL)");
    }
    if a.batches.contains(&0) || a.supports == 0 || a.queries == 0 {
        fail("--batch, --supports and --queries must be >= 1");
    }
    a
}

/// A smooth synthetic image (a few Gaussian blobs on a gradient, min-max normalised) and a label: the
/// region where the first blob dominates.
fn synthetic(rng: &mut ChaCha8Rng) -> (Array2<f32>, Array2<bool>) {
    let n = SIDE as f32;
    let blobs: Vec<(f32, f32, f32, f32)> = (0..4)
        .map(|i| {
            let amp = if i == 0 {
                rng.random_range(0.8..1.2)
            } else {
                rng.random_range(-0.6..0.6)
            };
            (
                rng.random_range(0.25 * n..0.75 * n),
                rng.random_range(0.25 * n..0.75 * n),
                rng.random_range(6.0..24.0),
                amp,
            )
        })
        .collect();
    let (gx, gy) = (rng.random_range(-0.3..0.3), rng.random_range(-0.3..0.3));
    let mut img = Array2::<f32>::from_shape_fn((SIDE, SIDE), |(y, x)| {
        let (xf, yf) = (x as f32, y as f32);
        let mut v = gx * xf / n + gy * yf / n;
        for &(cx, cy, s, amp) in &blobs {
            v += amp * (-((xf - cx).powi(2) + (yf - cy).powi(2)) / (2.0 * s * s)).exp();
        }
        v + rng.random_range(-0.02..0.02)
    });
    let (cx, cy, s, _) = blobs[0];
    let label = Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < (1.2 * s).powi(2)
    });
    let (lo, hi) = img
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    img.mapv_inplace(|v| (v - lo) / (hi - lo).max(1e-6));
    (img, label)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Minimal .npy (format 1.0) writer.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)?;
    f.flush()
}

fn f32_bytes<'a>(arrays: impl Iterator<Item = ArrayView2<'a, f32>>) -> Vec<u8> {
    arrays
        .flat_map(|a| a.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        .collect()
}

fn dump(
    dir: &Path,
    support: &SupportSet<'_>,
    queries: &[ArrayView2<'_, f32>],
    masks: &[Mask],
    threshold: f32,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("meta.json"),
        format!("{{\"threshold\": {threshold}}}\n"),
    )?;
    let (s, q) = (support.images.len(), queries.len());
    write_npy(
        &dir.join("support_images.npy"),
        "<f4",
        &[s, 1, SIDE, SIDE],
        &f32_bytes(support.images.iter().cloned()),
    )?;
    let labels: Vec<Array2<f32>> = support
        .labels
        .iter()
        .map(|l| l.mapv(|b| b as u8 as f32))
        .collect();
    write_npy(
        &dir.join("support_labels.npy"),
        "<f4",
        &[s, 1, SIDE, SIDE],
        &f32_bytes(labels.iter().map(|l| l.view())),
    )?;
    write_npy(
        &dir.join("queries.npy"),
        "<f4",
        &[q, 1, SIDE, SIDE],
        &f32_bytes(queries.iter().cloned()),
    )?;
    let m: Vec<u8> = masks
        .iter()
        .flat_map(|m| m.iter().map(|&b| b as u8).collect::<Vec<u8>>())
        .collect();
    write_npy(
        &dir.join("masks.npy"),
        "|u1",
        &[masks.len(), SIDE, SIDE],
        &m,
    )
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort::logging=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args();
    let model = args.model.clone().unwrap();

    let runtime = Runtime::init(RuntimeConfig {
        library: None, // $SPE_ORT_LIB, then the usual search
        provider: args.provider,
        provider_required: true,
        intra_threads: args.threads,
        // This bench has no clap; it reads the service's variables itself (tools/gpu_bench.sh sets them).
        cuda: spe::inference::runtime::CudaKernels {
            prefer_nhwc: std::env::var("SPE_CUDA_PREFER_NHWC").is_ok_and(|v| v == "1"),
            fuse_conv_bias: std::env::var("SPE_CUDA_FUSE_CONV_BIAS").is_ok_and(|v| v == "1"),
        },
        session_cache: 0,
    })
    .unwrap_or_else(|e| fail(format!("ONNX Runtime: {e}")));
    let bytes = std::fs::read(&model).unwrap_or_else(|e| fail(format!("{}: {e}", model.display())));
    let cuda_available = {
        use ort::ep::ExecutionProvider as _;
        ort::ep::CUDA::is_available().unwrap_or(false)
    };
    println!("library            {}", runtime.library.display());
    println!(
        "provider           {} (required: session creation fails otherwise); CUDA EP compiled into this library: {}",
        runtime.provider(),
        cuda_available
    );
    println!(
        "model              {} ({:.2} MB)",
        model.display(),
        bytes.len() as f64 / 1e6
    );

    // Pool: supports drawn per repetition from 2*S images; queries separate.
    let mut rng = ChaCha8Rng::seed_from_u64(2025);
    let pool_n = 2 * args.supports;
    let pool: Vec<(Array2<f32>, Array2<bool>)> = (0..pool_n).map(|_| synthetic(&mut rng)).collect();
    let max_q = args
        .queries
        .max(args.timed_queries + args.batches.iter().max().unwrap());
    let query_imgs: Vec<Array2<f32>> = (0..max_q).map(|_| synthetic(&mut rng).0).collect();
    let queries_all: Vec<ArrayView2<f32>> = query_imgs.iter().map(|a| a.view()).collect();
    let subset = |rng: &mut ChaCha8Rng| {
        let idx = sample(rng, pool_n, args.supports).into_vec();
        SupportSet {
            images: idx.iter().map(|&i| pool[i].0.view()).collect(),
            labels: idx.iter().map(|&i| pool[i].1.view()).collect(),
        }
    };
    let queries = &queries_all[..args.queries];

    let mut summary = Vec::new();
    let mut first_config = true;
    for &batch in &args.batches {
        let t_load = Instant::now();
        let seg = OnnxReverse::load(
            &runtime,
            &bytes,
            &model.display().to_string(),
            OnnxReverseParams {
                threshold: args.threshold,
                batch,
            },
        )
        .unwrap_or_else(|e| fail(e));
        println!(
            "\n== {} | batch {batch} | S={} ==",
            seg.describe(),
            args.supports
        );
        println!("session created in {:.0} ms", ms(t_load.elapsed()));

        let support = subset(&mut rng);
        if let (Some(dir), true) = (&args.dump, first_config) {
            let n = queries.len().min(args.dump_queries);
            let masks = seg
                .segment(&support, &queries[..n])
                .unwrap_or_else(|e| fail(e));
            dump(dir, &support, &queries[..n], &masks, args.threshold)
                .unwrap_or_else(|e| fail(format!("dump: {e}")));
            println!(
                "dumped {n} queries, S={} and their masks (threshold {}) to {}",
                args.supports,
                args.threshold,
                dir.display()
            );
        }
        first_config = false;
        // Warm-up: covers the full-batch and the remainder shapes (cuDNN algorithm search happens here).
        for w in 0..args.warmup {
            let t = Instant::now();
            let masks = seg.segment(&support, queries).unwrap_or_else(|e| fail(e));
            println!(
                "warm-up {}: {:>9.1} ms ({} masks)",
                w + 1,
                ms(t.elapsed()),
                masks.len()
            );
        }

        // ms per query: `segment` over a multiple of the batch, several rounds.
        let tq = args.timed_queries.div_ceil(batch) * batch;
        let timed = &queries_all[..tq];
        if args.warmup == 0 && args.timed_rounds > 0 {
            seg.segment(&support, timed).unwrap_or_else(|e| fail(e));
        }
        let per_query: Vec<f64> = (0..args.timed_rounds)
            .map(|_| {
                let t = Instant::now();
                seg.segment(&support, timed).unwrap_or_else(|e| fail(e));
                ms(t.elapsed()) / tq as f64
            })
            .collect();
        let med = if per_query.is_empty() {
            f64::NAN
        } else {
            median(per_query.clone())
        };
        if !per_query.is_empty() {
            let best = per_query.iter().cloned().fold(f64::MAX, f64::min);
            println!(
                "ms per query       {med:.3} (median of {} segment calls of {tq} queries; best {best:.3}) at S={}",
                args.timed_rounds, args.supports
            );
        }

        // One full-protocol pseudo metric: reps x segment(queries), fresh random support subset each.
        let mut total = Duration::ZERO;
        let mut fg = 0usize;
        for r in 0..args.reps {
            let support = subset(&mut rng);
            let t = Instant::now();
            let masks = seg.segment(&support, queries).unwrap_or_else(|e| fail(e));
            let took = t.elapsed();
            total += took;
            fg += masks
                .iter()
                .map(|m| m.iter().filter(|&&b| b).count())
                .sum::<usize>();
            println!(
                "repetition {}: {:>9.1} ms ({} masks)",
                r + 1,
                ms(took),
                masks.len()
            );
        }
        let n_masks = args.reps * args.queries;
        if args.reps > 0 {
            println!(
            "full protocol      {:.3} s  ({} reps x {} queries, S={}; {:.3} ms/query; mean foreground {:.3})",
            total.as_secs_f64(),
            args.reps,
            args.queries,
            args.supports,
            ms(total) / n_masks.max(1) as f64,
            fg as f64 / (n_masks.max(1) * SIDE * SIDE) as f64
            );
        }
        summary.push((batch, med, total.as_secs_f64()));
    }

    println!(
        "\nSUMMARY provider={} model={} S={}",
        runtime.provider(),
        model.display(),
        args.supports
    );
    for (batch, med, total) in summary {
        println!(
            "SUMMARY batch {batch:>3}: {med:>8.3} ms/query   full protocol ({}x{}) {total:>7.3} s",
            args.reps, args.queries
        );
    }
}
