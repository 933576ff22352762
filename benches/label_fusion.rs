//! Times one full-protocol pseudo metric with the label-fusion reverse segmenter: 6 repetitions of
//! `segment` with 49 supports (the calibration split) and 172 queries (the reference set), on synthetic
//! smooth images (no data needed), side by side with the previous release's label fusion (translation
//! search only, `scale_step` 0) and the literal method.md formula as baselines.
//!
//!   cargo bench --bench label_fusion                       # default params + baseline (1 repetition)
//!   cargo bench --bench label_fusion -- --baseline-reps 6  # time the baseline over the whole protocol
//!
//! Other flags: --params JSON (overrides of the default params, e.g. '{"top_k":8}'), --reps N (those params), --method-md-reps N (the method.md formula through the optimised
//! code), --supports N, --queries N, --threads N (0 = rayon default).

use spe::engine::{ReverseSegmenter, SupportSet};
use spe::inference::label_fusion::{reference, LabelFusion, LabelFusionParams};
use std::time::{Duration, Instant};

struct Args {
    /// JSON overrides of the default parameters, e.g. `{"top_k": 8}`.
    params: LabelFusionParams,
    reps: usize,
    method_md_reps: usize,
    baseline_reps: usize,
    supports: usize,
    queries: usize,
    threads: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        params: LabelFusionParams::default(),
        reps: 6,
        method_md_reps: 6,
        baseline_reps: 1,
        supports: 49,
        queries: 172,
        threads: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--params" {
            let json = it.next().expect("--params needs a JSON object");
            args.params =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("--params {json}: {e}"));
            continue;
        }
        let slot = match flag.as_str() {
            "--reps" => &mut args.reps,
            "--method-md-reps" => &mut args.method_md_reps,
            "--baseline-reps" => &mut args.baseline_reps,
            "--supports" => &mut args.supports,
            "--queries" => &mut args.queries,
            "--threads" => &mut args.threads,
            _ => continue, // cargo passes --bench; ignore what we do not know
        };
        *slot = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
    }
    args
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs `reps` repetitions and prints each; returns the total.
fn time_protocol(name: &str, reps: usize, mut run: impl FnMut() -> usize) -> Duration {
    let mut total = Duration::ZERO;
    for r in 0..reps {
        let start = Instant::now();
        let masks = run();
        let took = start.elapsed();
        total += took;
        println!(
            "{name:<28} repetition {}: {:>8.3} s  ({masks} masks)",
            r + 1,
            secs(took)
        );
    }
    total
}

fn main() {
    let args = parse_args();
    let (images, labels) = reference::synthetic_set(args.supports + args.queries, 2025);
    let support = SupportSet {
        images: images[..args.supports].iter().map(|a| a.view()).collect(),
        labels: labels[..args.supports].iter().map(|a| a.view()).collect(),
    };
    let queries: Vec<_> = images[args.supports..].iter().map(|a| a.view()).collect();
    println!(
        "label fusion, one pseudo metric: {} repetitions x {} supports x {} queries, {} rayon threads",
        args.reps,
        args.supports,
        args.queries,
        if args.threads == 0 { rayon::current_num_threads() } else { args.threads }
    );

    let mut rows = Vec::new();
    // The chosen default, the previous release's (no scale search), then the method.md formula through
    // the same optimised code.
    let previous = LabelFusionParams {
        scale_step: 0.0,
        ..LabelFusionParams::default()
    };
    for (params, reps) in [
        (args.params.clone(), args.reps),
        (previous, args.reps),
        (LabelFusionParams::method_md(), args.method_md_reps),
    ] {
        if reps == 0 {
            continue;
        }
        let lf = LabelFusion::new(LabelFusionParams {
            threads: args.threads,
            ..params
        });
        let name = lf.describe();
        let total = time_protocol(&name, reps, || {
            lf.segment(&support, &queries).expect("segment").len()
        });
        rows.push((name, total, reps));
    }

    if args.baseline_reps > 0 {
        let name = "naive method.md (1 thread)";
        let total = time_protocol(name, args.baseline_reps, || {
            reference::segment(&support, &queries, 4.0)
                .expect("reference")
                .len()
        });
        rows.push((name.to_string(), total, args.baseline_reps));
    }

    println!(
        "\n{:<90} {:>12} {:>14}",
        "segmenter", "per rep (s)", "protocol (s)"
    );
    for (name, total, reps) in &rows {
        let per = secs(*total) / *reps as f64;
        let note = if *reps == args.reps {
            ""
        } else {
            " (projected)"
        };
        println!(
            "{name:<90} {per:>12.3} {:>14.3}{note}",
            per * args.reps as f64
        );
    }
}
