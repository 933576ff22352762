//! The `spe` command line: engine commands (evaluate, calibrate, estimate, plot) and the service commands.

use crate::engine::fit::{Calibration, CheckpointPoint};
use crate::engine::image_io::{self, LabelledSet, DEFAULT_MAX_PIXELS};
use crate::engine::metrics::Metric;
use crate::engine::spe::{self, PseudoOutcome, ReferenceSet, SpeParams};
use crate::engine::{Gray, ReverseSegmenter};
use crate::inference::{
    ExecutionProvider, ModelSpec, Reverse, Runtime, RuntimeConfig, SegModel, DEFAULT_ONNX_THRESHOLD,
};
use crate::ingest::dicom;
use crate::ingest::expand::{self, InputFile};
use crate::pipeline;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "spe",
    version,
    about = "Estimate a segmentation model's Dice/HD95/... on unlabeled images (SPE)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Real metrics of a model on a labelled set.
    Evaluate(EvaluateArgs),
    /// Fit the pseudo->real mapping from training checkpoints (stage 1).
    Calibrate(CalibrateArgs),
    /// Estimate a model's metrics on an unlabeled batch (stage 2).
    Estimate(EstimateArgs),
    /// Draw a calibration's mapping of one metric as SVG (pseudo vs real per checkpoint, the curve).
    Plot(PlotArgs),
    /// Run the REST service (API and/or job workers).
    Serve(crate::service::ServeArgs),
    /// Apply the database migrations (serve also does at start-up).
    Migrate(crate::service::DbArgs),
    /// Manage API keys.
    Keys(crate::service::KeysArgs),
    /// Maintenance of the service's database and blob store.
    Admin(crate::service::AdminArgs),
}

/// Options shared by the commands that run models.
#[derive(Args, Clone)]
struct RuntimeArgs {
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// ONNX Runtime execution provider: cpu, cuda or tensorrt.
    #[arg(long, env = "SPE_PROVIDER", default_value = "cpu")]
    provider: ExecutionProvider,
    /// Fail instead of falling back to CPU when the provider is unavailable.
    #[arg(long, env = "SPE_PROVIDER_REQUIRED")]
    provider_required: bool,
    /// Path of libonnxruntime.so (default: search, see README).
    #[arg(long, env = "SPE_ORT_LIB")]
    ort_lib: Option<PathBuf>,
    #[command(flatten)]
    cuda: crate::service::CudaArgs,
    /// Refuse images with more pixels than this (decompression-bomb guard).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

/// SPE protocol options.
#[derive(Args, Clone)]
struct ProtocolArgs {
    /// Reverse segmenter: `label-fusion` or `onnx:PATH` (a UniverSeg-contract ONNX).
    #[arg(long, default_value = "label-fusion")]
    reverse: ReverseFlag,
    /// Threshold on sigmoid(logits) for an ONNX reverse segmenter.
    #[arg(long, default_value_t = DEFAULT_ONNX_THRESHOLD)]
    reverse_threshold: f32,
    /// Supports per repetition (default 64; estimate: the calibration's).
    #[arg(long)]
    support_size: Option<usize>,
    /// Random support subsets averaged (default 6; estimate: the calibration's).
    #[arg(long)]
    repetitions: Option<usize>,
    /// Minimum predicted foreground pixels for an image to be a support (default 20; estimate: the calibration's).
    #[arg(long)]
    min_area: Option<usize>,
    /// Seed of the support draws (default 0; estimate: the calibration's).
    #[arg(long)]
    seed: Option<u64>,
}

/// `--reverse`: `label-fusion`, or `onnx:PATH` for a UniverSeg-contract ONNX file.
#[derive(Clone, Debug)]
struct ReverseFlag(Option<PathBuf>);

impl std::str::FromStr for ReverseFlag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match (s, s.strip_prefix("onnx:")) {
            ("label-fusion", _) => Ok(ReverseFlag(None)),
            (_, Some(path)) if !path.is_empty() => Ok(ReverseFlag(Some(PathBuf::from(path)))),
            _ => Err(format!(
                "unknown reverse segmenter {s:?}: use `label-fusion` or `onnx:PATH` (a UniverSeg-contract ONNX)"
            )),
        }
    }
}

impl ProtocolArgs {
    /// The reverse segmenter the flags name; an ONNX file is named by its digest, as the service does.
    fn build_reverse(&self, runtime: &Runtime) -> Result<Arc<dyn ReverseSegmenter>> {
        let Some(path) = &self.reverse.0 else {
            return Ok(Reverse::LabelFusion.build(runtime, None)?);
        };
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the reverse segmenter {}", path.display()))?;
        let reverse = Reverse::onnx(&crate::digest::sha256_hex(&bytes), self.reverse_threshold)?;
        Ok(reverse.build(runtime, Some(&bytes))?)
    }

    fn params(&self, base: SpeParams) -> SpeParams {
        SpeParams {
            min_area: self.min_area.unwrap_or(base.min_area),
            support_size: self.support_size.unwrap_or(base.support_size),
            repetitions: self.repetitions.unwrap_or(base.repetitions),
            seed: self.seed.unwrap_or(base.seed),
        }
    }
}

#[derive(Args)]
struct EvaluateArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    spec: PathBuf,
    #[arg(long)]
    images: PathBuf,
    #[arg(long)]
    labels: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct CalibrateArgs {
    /// Directory of checkpoint *.onnx files (checkpoint name = file stem).
    #[arg(long)]
    checkpoints: PathBuf,
    #[arg(long)]
    spec: PathBuf,
    /// Reference set: a directory with images/ and labels/ (the model's training images).
    #[arg(long)]
    reference: PathBuf,
    /// Calibration set: a directory with images/ and labels/ (held-out labelled images).
    #[arg(long)]
    calibration: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    protocol: ProtocolArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct EstimateArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    spec: PathBuf,
    /// CAL.json written by `spe calibrate`.
    #[arg(long)]
    calibration: PathBuf,
    /// Reference set: a directory with images/ and labels/.
    #[arg(long)]
    reference: PathBuf,
    /// Directory of unlabeled images: PNG, JPEG, DICOM (`.dcm` or any file with the DICM preamble; one
    /// image per frame) and NIfTI (`.nii`, `.nii.gz`; one image per slice), in any mix and order.
    #[arg(long)]
    images: PathBuf,
    /// NIfTI slicing axis (0, 1 or 2; default the last).
    #[arg(long)]
    axis: Option<usize>,
    /// Refuse a NIfTI volume or multi-frame DICOM instance with more voxels than this.
    #[arg(long, default_value_t = expand::DEFAULT_MAX_VOLUME_VOXELS)]
    max_volume_voxels: u64,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    protocol: ProtocolArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct PlotArgs {
    /// CAL.json written by `spe calibrate`.
    #[arg(long)]
    calibration: PathBuf,
    /// dice, jaccard, precision, recall, hd95 or pearson.
    #[arg(long, default_value = "dice", value_parser = parse_metric)]
    metric: Metric,
    /// The SVG file to write.
    #[arg(long)]
    out: PathBuf,
}

fn parse_metric(name: &str) -> Result<Metric, String> {
    Metric::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        format!("unknown metric {name:?}: use one of {}", known.join(", "))
    })
}

pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Evaluate(a) => evaluate_command(a),
        Command::Calibrate(a) => calibrate_command(a),
        Command::Estimate(a) => estimate_command(a),
        Command::Plot(a) => plot_command(a),
        Command::Serve(a) => crate::service::serve(a),
        Command::Migrate(a) => crate::service::migrate(a),
        Command::Keys(a) => crate::service::keys_command(a),
        Command::Admin(a) => crate::service::admin_command(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,spe=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn start_runtime(args: &RuntimeArgs) -> Result<Runtime> {
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build_global()
            .context("cannot size the thread pool")?;
    }
    Ok(Runtime::init(RuntimeConfig {
        library: args.ort_lib.clone(),
        provider: args.provider,
        provider_required: args.provider_required,
        intra_threads: args.threads,
        cuda: args.cuda.into(),
        // One command, one use of each model: nothing to keep.
        session_cache: 0,
    })?)
}

fn read_spec(path: &Path) -> Result<ModelSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read model spec {}", path.display()))?;
    ModelSpec::parse(&text).with_context(|| format!("model spec {}", path.display()))
}

fn load_model(runtime: &Runtime, path: &Path, spec: &ModelSpec, name: &str) -> Result<SegModel> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    Ok(SegModel::load(runtime, &bytes, name, spec)?)
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes JSON through a temporary file and a rename, so a reader never sees half a file.
fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_file(path, serde_json::to_string_pretty(value)? + "\n")
}

/// Writes a file through a temporary file beside it and a rename.
fn write_file(path: &Path, text: String) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A calibration file written by `spe calibrate`, checked before use.
fn read_calibration(path: &Path) -> Result<Calibration> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read calibration {}", path.display()))?;
    let calibration: Calibration = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a calibration written by `spe calibrate`",
            path.display()
        )
    })?;
    calibration.validate()?;
    Ok(calibration)
}

fn evaluate_command(args: EvaluateArgs) -> Result<()> {
    let runtime = start_runtime(&args.runtime)?;
    let spec = read_spec(&args.spec)?;
    let model = load_model(&runtime, &args.model, &spec, &file_stem(&args.model))?;
    let set = image_io::load_labelled(&args.images, &args.labels, args.runtime.max_pixels)?;
    let evaluation = pipeline::evaluate(&model, &set)?;
    write_json(&args.out, &evaluation)?;
    eprintln!(
        "{} images: dice {:.4}, hd95 {:.2} -> {}",
        set.names.len(),
        evaluation.mean.dice,
        evaluation.mean.hd95,
        args.out.display()
    );
    Ok(())
}

fn load_reference(dir: &Path, max_pixels: u64) -> Result<ReferenceSet> {
    let set = image_io::load_labelled_dir(dir, max_pixels)
        .with_context(|| format!("reference set {}", dir.display()))?;
    Ok(ReferenceSet::new(&set.images, set.labels)?)
}

fn calibrate_command(args: CalibrateArgs) -> Result<()> {
    let runtime = start_runtime(&args.runtime)?;
    let spec = read_spec(&args.spec)?;
    let params = args.protocol.params(SpeParams::default());
    params.validate()?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&args.checkpoints)
        .with_context(|| format!("cannot list checkpoints in {}", args.checkpoints.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no *.onnx checkpoints in {}", args.checkpoints.display());
    }
    let models = paths
        .iter()
        .map(|p| load_model(&runtime, p, &spec, &file_stem(p)))
        .collect::<Result<Vec<_>>>()?;
    let reference = load_reference(&args.reference, args.runtime.max_pixels)?;
    let calibration_set: LabelledSet =
        image_io::load_labelled_dir(&args.calibration, args.runtime.max_pixels)
            .with_context(|| format!("calibration set {}", args.calibration.display()))?;
    let reverse = args.protocol.build_reverse(&runtime)?;
    eprintln!(
        "calibrating {} checkpoints: {} reference images, {} calibration images, {}",
        models.len(),
        reference.images.len(),
        calibration_set.images.len(),
        reverse.describe()
    );
    let started = std::time::Instant::now();
    let mut report = |i: usize, n: usize, point: &CheckpointPoint| {
        let pseudo = match &point.outcome {
            PseudoOutcome::Ok { pseudo, .. } => format!("pseudo dice {:.4}", pseudo.dice),
            PseudoOutcome::InsufficientSupport { .. } => {
                "insufficient support (left out of the fit)".into()
            }
        };
        eprintln!(
            "[{}/{}] {}: real dice {:.4}, {pseudo} ({:.1}s)",
            i + 1,
            n,
            point.name,
            point.real.dice,
            started.elapsed().as_secs_f64()
        );
        std::ops::ControlFlow::Continue(())
    };
    let calibration = pipeline::calibrate(
        &models,
        &reference,
        &calibration_set,
        reverse.as_ref(),
        &params,
        &mut report,
    )?;
    write_json(&args.out, &calibration)?;
    print_fits(&calibration);
    eprintln!("calibration written to {}", args.out.display());
    Ok(())
}

fn print_fits(calibration: &Calibration) {
    for (metric, fit) in &calibration.fits {
        eprintln!(
            "  {:<9} {:<9} leave-one-out MAE {:.4}  r {:.4}  ({} points)",
            metric.name(),
            fit.mapping.name(),
            fit.loo_mae,
            fit.pearson_r,
            fit.n_points
        );
    }
    let sizes: Vec<String> = calibration
        .levels
        .iter()
        .map(|l| l.size.to_string())
        .collect();
    eprintln!(
        "  mappings per batch size (supports per draw): {}",
        sizes.join(", ")
    );
    if !calibration.excluded.is_empty() {
        eprintln!(
            "  left out (no support set): {}",
            calibration.excluded.join(", ")
        );
    }
}

fn estimate_command(args: EstimateArgs) -> Result<()> {
    let runtime = start_runtime(&args.runtime)?;
    let spec = read_spec(&args.spec)?;
    let calibration = read_calibration(&args.calibration)?;
    let params = args.protocol.params(calibration.params);
    let model = load_model(&runtime, &args.model, &spec, &file_stem(&args.model))?;
    let reference = load_reference(&args.reference, args.runtime.max_pixels)?;
    let opts = expand::Options {
        max_pixels: args.runtime.max_pixels,
        max_images: usize::MAX,
        max_volume_voxels: args.max_volume_voxels,
        axis: args.axis,
        min_label_area: 0,
        max_request_pixels: u64::MAX,
    };
    let batch = load_batch(&args.images, &opts)?;
    let reverse = args.protocol.build_reverse(&runtime)?;
    let (estimate, _) = pipeline::estimate_batch(
        &model,
        &calibration,
        &reference,
        &batch.images,
        reverse.as_ref(),
        &params,
    )?;
    // As the service does: DICOM/NIfTI batches whose every image gives its pixel size also get HD95 in mm.
    let mut out = serde_json::to_value(&estimate)?;
    if let (Some(hd95_mm), Some(fields)) = (
        spe::mean_pixel_mm(&batch.pixel_mm).and_then(|mm| spe::hd95_mm(&estimate, mm)),
        out.as_object_mut(),
    ) {
        fields.insert("hd95_mm".into(), serde_json::to_value(hd95_mm)?);
    }
    write_json(&args.out, &out)?;
    if let spe::Estimate::Ok {
        anchor, warnings, ..
    } = &estimate
    {
        if let Some(name) = anchor {
            eprintln!("the model is calibration checkpoint {name}: anchored there");
        }
        for w in warnings {
            eprintln!("warning ({}): {}", w.code, w.message);
        }
    }
    eprintln!("estimate written to {}", args.out.display());
    Ok(())
}

fn plot_command(args: PlotArgs) -> Result<()> {
    let calibration = read_calibration(&args.calibration)?;
    let svg =
        crate::plot::calibration_svg(&calibration, args.metric, &file_stem(&args.calibration))?;
    write_file(&args.out, svg)?;
    eprintln!("{} plot written to {}", args.metric, args.out.display());
    Ok(())
}

/// A batch folder's images, decoded for the engine, with each one's working-grid pixel size in mm when its
/// file says.
struct Batch {
    images: Vec<Gray>,
    pixel_mm: Vec<Option<[f64; 2]>>,
}

/// The files of a batch folder, expanded as the service expands an upload (so DICOM frames and NIfTI
/// slices give the same images there and here).
fn load_batch(dir: &Path, opts: &expand::Options) -> Result<Batch> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Hidden files include macOS "._x.png" resource forks, which are not images.
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let known = [".png", ".jpg", ".jpeg", ".dcm", ".nii", ".nii.gz"]
            .iter()
            .any(|x| lower.ends_with(x));
        // PACS exports often name instances by UID, without a .dcm extension: those count by their bytes.
        if !known && !starts_as_dicom(&path)? {
            continue;
        }
        let data =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        files.push(InputFile {
            name: path.display().to_string(),
            origin: path.display().to_string(),
            data: Bytes::from(data),
        });
    }
    if files.is_empty() {
        bail!("no PNG, JPEG, DICOM or NIfTI images in {}", dir.display());
    }
    let images = expand::unlabelled(&files, opts, "the batch")?;
    Ok(Batch {
        images: images
            .par_iter()
            .map(|image| image_io::decode_gray(&image.image, &image.name, opts.max_pixels))
            .collect::<Result<_, _>>()?,
        pixel_mm: images.iter().map(|image| image.pixel_mm).collect(),
    })
}

/// Whether a file begins like a DICOM Part 10 file (read up to the DICM magic only).
fn starts_as_dicom(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = Vec::with_capacity(132);
    std::fs::File::open(path)
        .and_then(|f| f.take(132).read_to_end(&mut head))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(dicom::is_dicom(&head))
}
