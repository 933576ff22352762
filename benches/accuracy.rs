//! SPE estimate accuracy on the shared model families (../shared or $SPE_SHARED), through the
//! library's public API: calibrate every checkpoint on half of the test split, then estimate the
//! deployed checkpoint's Dice on batches drawn only from the other half: the clean half, small random
//! subsets and shifted copies (photometric and geometric deployment changes). Two deployments per
//! dataset: the last checkpoint, and a weaker one whose per-image quality varies more. The baseline
//! quotes the deployed checkpoint's calibration-half Dice for every batch.
//!
//!   make bench-accuracy                      # both datasets, every batch
//!   make bench-accuracy ARGS="--quick"       # clean + 4 shifts + 2 small batches, no checkpoint rows
//!   make bench-accuracy ARGS="--dataset hc18"
//!
//! Prints one line per batch and a Markdown summary table; writes everything to target/accuracy.json.

#[path = "accuracy/report.rs"]
mod report;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use report::{BatchRow, CheckpointRow, Summary};
use serde::Serialize;
use spe::engine::fit::Calibration;
use spe::engine::image_io::{self, LabelledSet, DEFAULT_MAX_PIXELS};
use spe::engine::metrics::{Metric, MetricSet};
use spe::engine::shift::Shift;
use spe::engine::spe::{Estimate, ReferenceSet, SpeParams};
use spe::engine::{Gray, Mask};
use spe::inference::{LabelFusion, LabelFusionParams, ModelSpec, Runtime, RuntimeConfig, SegModel};
use spe::pipeline;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The weaker deployment is at least this much below the last checkpoint on the calibration half.
const WEAKER: f64 = 0.04;

/// (dataset, model family) under the shared folder.
const DATASETS: [(&str, &str); 2] = [("jsrt", "jsrt-heart-unet"), ("hc18", "hc18-unet")];

struct Args {
    datasets: Vec<String>,
    quick: bool,
    /// `--label-fusion JSON`: the reverse segmenter's settings over the defaults, to compare variants
    /// side by side (e.g. `{"scale_step":0}`).
    label_fusion: LabelFusionParams,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        datasets: DATASETS.iter().map(|(d, _)| d.to_string()).collect(),
        quick: false,
        label_fusion: LabelFusionParams::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quick" => args.quick = true,
            "--label-fusion" => {
                let json = it.next().context("--label-fusion needs a JSON object")?;
                args.label_fusion = serde_json::from_str(&json)
                    .with_context(|| format!("--label-fusion {json}"))?;
                args.label_fusion.validate()?;
            }
            "--dataset" => {
                let d = it.next().context("--dataset needs jsrt or hc18")?;
                if !DATASETS.iter().any(|(name, _)| *name == d) {
                    bail!("unknown dataset {d:?}: use jsrt or hc18");
                }
                args.datasets = vec![d];
            }
            _ => {} // cargo passes --bench; ignore what we do not know
        }
    }
    Ok(args)
}

fn shared_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("SPE_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    if !dir.join("models").is_dir() || !dir.join("datasets").is_dir() {
        bail!(
            "the shared data is missing: {} has no models/ and datasets/ (set SPE_SHARED to the shared folder)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The deployed batches: (name, kind, shift, holdout indices).
fn batch_plan(n: usize, quick: bool) -> Vec<(String, String, Option<Shift>, Vec<usize>)> {
    let all: Vec<usize> = (0..n).collect();
    let mut plan = vec![("clean".to_string(), "clean".to_string(), None, all.clone())];
    let mut rng = ChaCha8Rng::seed_from_u64(2025);
    let per_size = if quick { 1 } else { 4 };
    for size in [6, 12] {
        for k in 0..per_size {
            let mut pick = rand::seq::index::sample(&mut rng, n, size.min(n)).into_vec();
            pick.sort_unstable();
            plan.push((
                format!("small{size} #{}", k + 1),
                format!("small{size}"),
                None,
                pick,
            ));
        }
    }
    let shifts: Vec<Shift> = if quick {
        vec![
            Shift::Gamma { gamma: 0.6 },
            Shift::Blur { sigma: 2.0 },
            Shift::Rotate { degrees: -12.0 },
            Shift::Zoom { factor: 1.12 },
        ]
    } else {
        vec![
            Shift::Gamma { gamma: 0.6 },
            Shift::Gamma { gamma: 1.6 },
            Shift::Contrast { factor: 0.6 },
            Shift::Brightness { offset: 30.0 },
            Shift::Noise {
                sigma: 8.0,
                seed: 1,
            },
            Shift::Noise {
                sigma: 20.0,
                seed: 2,
            },
            Shift::Blur { sigma: 1.0 },
            Shift::Blur { sigma: 2.0 },
            Shift::Downsample { factor: 2 },
            Shift::Downsample { factor: 4 },
            Shift::Rotate { degrees: 8.0 },
            Shift::Rotate { degrees: -12.0 },
            Shift::Zoom { factor: 0.88 },
            Shift::Zoom { factor: 1.12 },
            Shift::Translate { dy: 6, dx: -6 },
            Shift::FlipHorizontal,
            // Stronger versions of the kinds above, and kinds the calibration never simulates.
            Shift::Gamma { gamma: 0.45 },
            Shift::Gamma { gamma: 2.0 },
            Shift::Rotate { degrees: 15.0 },
            Shift::Zoom { factor: 0.8 },
            Shift::Speckle {
                sigma: 0.25,
                seed: 3,
            },
            Shift::BiasField { strength: 0.3 },
            Shift::Sharpen { amount: 1.5 },
            Shift::Posterize { levels: 12 },
        ]
    };
    for s in shifts {
        plan.push((s.label(), "shifted".into(), Some(s), all.clone()));
    }
    plan
}

/// Even indices (calibration half) and odd indices (holdout half) of a set sorted by name.
fn split_alternating(set: &LabelledSet) -> (LabelledSet, LabelledSet) {
    let half = |parity: usize| {
        let keep = |i: &usize| i % 2 == parity;
        let idx: Vec<usize> = (0..set.names.len()).filter(keep).collect();
        LabelledSet {
            names: idx.iter().map(|&i| set.names[i].clone()).collect(),
            images: idx.iter().map(|&i| set.images[i].clone()).collect(),
            labels: idx.iter().map(|&i| set.labels[i].clone()).collect(),
        }
    };
    (half(0), half(1))
}

/// `epoch_*.onnx` in `dir`, sorted by epoch number.
fn checkpoints(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let epoch = name.strip_prefix("epoch_")?.strip_suffix(".onnx")?;
            Some((epoch.parse().ok()?, p))
        })
        .collect();
    found.sort();
    if found.len() < 3 {
        bail!(
            "{}: {} epoch_*.onnx checkpoints, at least 3 needed",
            dir.display(),
            found.len()
        );
    }
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// What one estimate said about Dice and HD95 (None = insufficient support).
fn read_estimate(estimate: &Estimate) -> Option<(f64, [f64; 2], Option<f64>)> {
    match estimate {
        Estimate::Ok { metrics, .. } => {
            let dice = metrics.get(&Metric::Dice)?;
            let hd95 = metrics.get(&Metric::Hd95).map(|m| m.estimate);
            Some((dice.estimate, dice.interval, hd95))
        }
        Estimate::InsufficientSupport { .. } => None,
    }
}

/// Everything one dataset needs for its estimates.
struct Bench<'a> {
    calibration: &'a Calibration,
    reference: &'a ReferenceSet,
    reverse: &'a LabelFusion,
    params: &'a SpeParams,
}

impl Bench<'_> {
    /// Real metrics of `model` on the batch and the estimate (seconds it took).
    fn run(
        &self,
        model: &SegModel,
        names: &[String],
        images: &[Gray],
        labels: &[Mask],
    ) -> Result<(MetricSet, Estimate, f64)> {
        let predictions = model.predict(images)?;
        let real = pipeline::score(names, labels, &predictions).mean;
        let started = Instant::now();
        let (estimate, _) = pipeline::estimate_batch(
            model,
            self.calibration,
            self.reference,
            images,
            self.reverse,
            self.params,
        )?;
        Ok((real, estimate, started.elapsed().as_secs_f64()))
    }
}

#[derive(Serialize)]
struct DatasetReport {
    /// The table's column: the dataset, plus the model when it is not the last checkpoint.
    column: String,
    dataset: String,
    reference_images: usize,
    calibration_images: usize,
    holdout_images: usize,
    reverse: String,
    deployed: String,
    baseline_dice: f64,
    fits: serde_json::Value,
    excluded_from_fit: Vec<String>,
    batches: Vec<BatchRow>,
    checkpoints: Vec<CheckpointRow>,
    summary: Summary,
}

fn run_dataset(
    runtime: &Runtime,
    spec: &ModelSpec,
    shared: &Path,
    (dataset, family): (&str, &str),
    args: &Args,
) -> Result<Vec<DatasetReport>> {
    let quick = args.quick;
    let data = shared.join("datasets").join(dataset);
    let train = image_io::load_labelled_dir(&data.join("train"), DEFAULT_MAX_PIXELS)
        .with_context(|| format!("{dataset} train"))?;
    let reference = ReferenceSet::new(&train.images, train.labels)?;
    let test = image_io::load_labelled_dir(&data.join("test"), DEFAULT_MAX_PIXELS)
        .with_context(|| format!("{dataset} test"))?;
    let (calib, holdout) = split_alternating(&test);
    let models = checkpoints(&shared.join("models").join(family))?
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            let name = p.file_stem().unwrap_or_default().to_string_lossy();
            Ok(SegModel::load(runtime, &bytes, &name, spec)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let reverse = LabelFusion::new(args.label_fusion.clone());
    let params = SpeParams::default();
    println!(
        "\n## {dataset}: {} checkpoints, {} reference, {} calibration, {} holdout images",
        models.len(),
        reference.images.len(),
        calib.images.len(),
        holdout.images.len()
    );

    let started = Instant::now();
    let mut progress = |i: usize, n: usize, p: &spe::engine::fit::CheckpointPoint| {
        let (k, name, dice) = (i + 1, &p.name, p.real.dice);
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("  calibrate [{k}/{n}] {name}: real dice {dice:.4} ({seconds:.1}s)");
        std::ops::ControlFlow::Continue(())
    };
    let calibration = pipeline::calibrate(
        &models,
        &reference,
        &calib,
        &reverse,
        &params,
        &mut progress,
    )?;
    let calibrate_seconds = started.elapsed().as_secs_f64();
    // The calibration as `spe calibrate` would write it, for looking into the fits.
    let cal_path = target_dir()?.join(format!("accuracy-{dataset}-calibration.json"));
    std::fs::write(&cal_path, serde_json::to_string(&calibration)?)
        .with_context(|| format!("cannot write {}", cal_path.display()))?;
    let calibration_real = |model: &SegModel| -> Result<MetricSet> {
        match calibration
            .checkpoints
            .iter()
            .find(|p| p.name == model.name())
        {
            Some(p) => Ok(p.real),
            None => Ok(pipeline::evaluate(model, &calib)?.mean),
        }
    };
    let last = models.last().expect("at least 3 checkpoints");
    let last_dice = calibration_real(last)?.dice;
    // A second, weaker deployment: the last checkpoint at least WEAKER below the last one that still
    // segments (Dice >= 0.75). Its per-image quality varies more, as a second model family's may, so its
    // small batches test whether the estimate follows the images rather than quoting the calibration.
    let mut deployed = vec![(last, last_dice)];
    for model in models.iter().rev() {
        let dice = calibration_real(model)?.dice;
        if dice <= last_dice - WEAKER && dice >= 0.75 {
            deployed.push((model, dice));
            break;
        }
    }
    println!("calibrated in {calibrate_seconds:.1}s");
    let bench = Bench {
        calibration: &calibration,
        reference: &reference,
        reverse: &reverse,
        params: &params,
    };
    let mut per_deployed = Vec::new();
    for &(model, baseline) in &deployed {
        println!(
            "deployed {} with calibration-half Dice {baseline:.4}:",
            model.name()
        );
        per_deployed.push((
            model,
            baseline,
            deployed_batches(&bench, model, baseline, &holdout, quick)?,
        ));
    }

    let mut checkpoint_rows = Vec::new();
    if !quick {
        println!("checkpoints on the clean holdout half:");
        for model in &models {
            let (real, estimate, _) =
                bench.run(model, &holdout.names, &holdout.images, &holdout.labels)?;
            let base = calibration_real(model)?;
            let read = read_estimate(&estimate);
            let row = CheckpointRow {
                name: model.name().to_string(),
                real_dice: real.dice,
                real_hd95: real.hd95,
                calibration_dice: base.dice,
                calibration_hd95: base.hd95,
                estimate_dice: read.map(|r| r.0),
                estimate_hd95: read.and_then(|r| r.2),
            };
            let shown =
                |v: Option<f64>, d: usize| v.map_or("insufficient".into(), |v| format!("{v:.d$}"));
            println!(
                "  {:<10} real dice {:.4} est {}  (calibration half {:.4})   real hd95 {:.2} est {} (calibration half {:.2})",
                row.name,
                row.real_dice,
                shown(row.estimate_dice, 4),
                row.calibration_dice,
                row.real_hd95,
                shown(row.estimate_hd95, 2),
                row.calibration_hd95
            );
            checkpoint_rows.push(row);
        }
    }

    let mut reports = Vec::new();
    for (i, (model, baseline, batches)) in per_deployed.into_iter().enumerate() {
        // The every-checkpoint rows do not depend on the deployment: reported once, with the last.
        let checkpoints = if i == 0 {
            std::mem::take(&mut checkpoint_rows)
        } else {
            Vec::new()
        };
        let summary = Summary::new(&batches, &checkpoints, calibrate_seconds);
        reports.push(DatasetReport {
            column: if i == 0 {
                dataset.to_string()
            } else {
                format!("{dataset} {}", model.name())
            },
            dataset: dataset.to_string(),
            reference_images: reference.images.len(),
            calibration_images: calib.images.len(),
            holdout_images: holdout.images.len(),
            reverse: calibration.reverse.clone(),
            deployed: model.name().to_string(),
            baseline_dice: baseline,
            fits: serde_json::to_value(&calibration.fits)?,
            excluded_from_fit: calibration.excluded.clone(),
            batches,
            checkpoints,
            summary,
        });
    }
    Ok(reports)
}

/// Every planned batch of one deployed model: real metrics and the estimate.
fn deployed_batches(
    bench: &Bench<'_>,
    deployed: &SegModel,
    baseline: f64,
    holdout: &LabelledSet,
    quick: bool,
) -> Result<Vec<BatchRow>> {
    let mut batches = Vec::new();
    for (name, kind, shift, idx) in batch_plan(holdout.images.len(), quick) {
        let names: Vec<String> = idx.iter().map(|&i| holdout.names[i].clone()).collect();
        let (images, labels): (Vec<Gray>, Vec<Mask>) = idx
            .iter()
            .map(|&i| {
                let (image, label) = (&holdout.images[i], &holdout.labels[i]);
                match shift {
                    Some(s) => {
                        let (img, mask) = s.apply(image, Some(label), i as u64);
                        (img, mask.unwrap_or_else(|| label.clone()))
                    }
                    None => (image.clone(), label.clone()),
                }
            })
            .unzip();
        let (real, estimate, seconds) = bench.run(deployed, &names, &images, &labels)?;
        let read = read_estimate(&estimate);
        let row = BatchRow {
            name,
            kind,
            n: images.len(),
            real_dice: real.dice,
            real_hd95: real.hd95,
            estimate: read.map_or(0.0, |r| r.0),
            interval: read.map_or([0.0, 0.0], |r| r.1),
            estimate_hd95: read.and_then(|r| r.2),
            signals: match &estimate {
                Estimate::Ok { metrics, .. } => metrics
                    .get(&Metric::Dice)
                    .map(|d| [d.pseudo, d.agreement.unwrap_or(f64::NAN)]),
                Estimate::InsufficientSupport { .. } => None,
            },
            insufficient_support: read.is_none(),
            baseline,
            estimate_seconds: seconds,
            warnings: match &estimate {
                Estimate::Ok { warnings, .. } => warnings.iter().map(|w| w.code.clone()).collect(),
                Estimate::InsufficientSupport { .. } => Vec::new(),
            },
        };
        row.print();
        batches.push(row);
    }

    Ok(batches)
}

fn target_dir() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&target)?;
    Ok(target)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let shared = shared_dir()?;
    let started = Instant::now();
    let runtime = Runtime::init(RuntimeConfig::default())?;
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jsrt_spec.json");
    let spec_text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("cannot read {}", spec_path.display()))?;
    let spec = ModelSpec::parse(&spec_text)?;
    let mut reports = Vec::new();
    for pair in DATASETS
        .iter()
        .filter(|(d, _)| args.datasets.iter().any(|a| a == d))
    {
        reports.extend(run_dataset(&runtime, &spec, &shared, *pair, &args)?);
    }
    let columns: Vec<(String, Summary)> = reports
        .iter()
        .map(|r| (r.column.clone(), r.summary.clone()))
        .collect();
    println!(
        "\nSPE accuracy{} (Dice unless noted; baseline = deployed checkpoint's calibration-half value):\n",
        if args.quick { ", quick" } else { "" }
    );
    print!("{}", report::table(&columns));
    let seconds = started.elapsed().as_secs_f64();
    println!("\ntotal {seconds:.1}s");

    let out = target_dir()?.join("accuracy.json");
    let json = serde_json::json!({
        "quick": args.quick,
        "label_fusion": args.label_fusion.describe(),
        "total_seconds": seconds,
        "datasets": reports,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("accuracy bench: {e:#}");
        std::process::exit(1);
    }
}
