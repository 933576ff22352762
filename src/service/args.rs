//! The configuration of `spe serve` (flags and environment, one set of defaults, ranges checked by clap)
//! and the database flags shared by the other commands.

use crate::inference::runtime::CudaKernels;
use crate::inference::ExecutionProvider;
use clap::{Args, CommandFactory, FromArgMatches, Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// HTTP API only (jobs run on worker processes sharing the database and blob store).
    Api,
    /// Job workers only.
    Worker,
    /// Both in one process.
    All,
}

#[derive(Args, Clone, Debug)]
pub struct DbArgs {
    /// Postgres connection URL (`make run` and `make test` set it for a private local cluster).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// Kernel choices of the CUDA provider (README, Using a GPU), for `spe serve` and the commands that run
/// models. Off by default: neither was measured faster on the GPUs tried so far.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct CudaArgs {
    /// CUDA provider: prefer channels-last (NHWC) kernels (for graphs exported with `--layout nhwc`).
    #[arg(long, env = "SPE_CUDA_PREFER_NHWC")]
    pub cuda_prefer_nhwc: bool,
    /// CUDA provider: cuDNN frontend conv+bias fusion.
    #[arg(long, env = "SPE_CUDA_FUSE_CONV_BIAS")]
    pub cuda_fuse_conv_bias: bool,
}

impl From<CudaArgs> for CudaKernels {
    fn from(a: CudaArgs) -> Self {
        CudaKernels {
            prefer_nhwc: a.cuda_prefer_nhwc,
            fuse_conv_bias: a.cuda_fuse_conv_bias,
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on.
    #[arg(long, env = "SPE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// What this process runs.
    #[arg(long, env = "SPE_ROLE", value_enum, default_value = "all")]
    pub role: Role,
    /// Blob store: a local directory, or s3://bucket[/prefix] (credentials and AWS_ENDPOINT from the AWS_* env).
    #[arg(long, env = "SPE_BLOB_STORE", default_value = ".spe-data/blobs")]
    pub blob_store: String,
    /// Jobs run at once by this process (each uses every core).
    #[arg(long, env = "SPE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Job lease, renewed every third of it: a worker that stops heartbeating loses its job to another
    /// worker once the lease has been expired for another lease period (so a database outage up to
    /// about twice this long does not hand a running job over).
    #[arg(long, env = "SPE_LEASE_SECS", default_value_t = 30.0, value_parser = seconds_at_least::<1>)]
    pub lease_secs: f64,
    /// Queue poll interval (notifications usually wake workers sooner).
    #[arg(long, env = "SPE_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_ms: u64,
    /// Attempts per job (crashed attempts count) before it fails for good.
    #[arg(long, env = "SPE_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_attempts: i32,
    /// How long a job's transient failures (database, blob store, runtime) are retried, with
    /// exponential backoff, counted from the first; its inputs are kept until the final outcome.
    #[arg(long, env = "SPE_JOB_RETRY_WINDOW_SECS", default_value_t = 900)]
    pub job_retry_window_secs: u64,
    /// A job still running after this many seconds is stopped and fails; 0 = no limit.
    #[arg(long, env = "SPE_JOB_DEADLINE_SECS", default_value_t = 21600)]
    pub job_deadline_secs: u64,
    /// On SIGTERM, how long running jobs may take to finish before they are handed back to the queue.
    #[arg(long, env = "SPE_SHUTDOWN_GRACE_SECS", default_value_t = 20.0, value_parser = seconds_at_least::<0>)]
    pub shutdown_grace_secs: f64,
    /// Largest request body, in MiB.
    #[arg(long, env = "SPE_MAX_BODY_MB", default_value_t = 256)]
    pub max_body_mb: u64,
    /// Most images per uploaded set or batch.
    #[arg(long, env = "SPE_MAX_IMAGES", default_value_t = 1024)]
    pub max_images: usize,
    /// Most pixels per image, checked before decoding.
    #[arg(long, env = "SPE_MAX_PIXELS", default_value_t = crate::engine::image_io::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Most voxels in one NIfTI volume or multi-frame DICOM instance, checked before decoding.
    #[arg(long, env = "SPE_MAX_VOLUME_VOXELS", default_value_t = crate::ingest::expand::DEFAULT_MAX_VOLUME_VOXELS)]
    pub max_volume_voxels: u64,
    /// Most pixels (voxels) one request may decode in total, counted while decoding: 413 beyond.
    #[arg(long, env = "SPE_MAX_REQUEST_PIXELS", default_value_t = 1 << 31)]
    pub max_request_pixels: u64,
    /// Most jobs queued or running before submissions get 429.
    #[arg(long, env = "SPE_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: i64,
    /// Retry-After (seconds) sent with 429.
    #[arg(long, env = "SPE_RETRY_AFTER_SECS", default_value_t = 10)]
    pub retry_after_secs: u64,
    /// Longest time one request may take, body included (408 beyond).
    #[arg(long, env = "SPE_REQUEST_TIMEOUT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,
    /// At shutdown, how long /readyz answers 503 while requests are still served, so load balancers
    /// stop routing here before the listener closes.
    #[arg(long, env = "SPE_DRAIN_SECS", default_value_t = 5)]
    pub drain_secs: u64,
    /// Skip the migrations at start-up (rolling deploys: run `spe migrate` once first); the schema must
    /// then be exactly what this binary expects.
    #[arg(long, env = "SPE_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Require an API key for /healthz, /readyz and /metrics too.
    #[arg(long, env = "SPE_PROTECT_OPS")]
    pub protect_ops: bool,
    /// Database connections of the API (workers have their own, two per worker plus two).
    #[arg(long, env = "SPE_DB_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..))]
    pub db_connections: u32,
    /// How long an API request waits for one of those connections before it is answered 503 with
    /// Retry-After (so a saturated pool sheds requests instead of queueing them).
    #[arg(long, env = "SPE_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub db_acquire_timeout_secs: u64,
    /// Uploads (POST/PUT with a body) handled at once; more get 429 with Retry-After before their body is
    /// read. Keep it below --db-connections: each holds one connection while it stores its files.
    #[arg(long, env = "SPE_MAX_CONCURRENT_UPLOADS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_uploads: u32,
    /// Rayon threads for the engine (0 = all cores).
    #[arg(long, env = "SPE_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// ONNX Runtime sessions kept idle for the next job of the same model (each holds the model's
    /// weights, on the GPU when there is one); 0 builds a new session for every job.
    #[arg(long, env = "SPE_SESSION_CACHE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub session_cache: u32,
    /// ONNX Runtime execution provider: cpu, cuda or tensorrt.
    #[arg(long, env = "SPE_PROVIDER", default_value = "cpu")]
    pub provider: ExecutionProvider,
    /// Fail instead of falling back to CPU when the provider is unavailable.
    #[arg(long, env = "SPE_PROVIDER_REQUIRED")]
    pub provider_required: bool,
    /// Path of libonnxruntime.so (default: search, see README).
    #[arg(long, env = "SPE_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    #[command(flatten)]
    pub cuda: CudaArgs,
    /// Keep an unlabeled batch's pixels after its estimate is finished (default: only their SHA-256
    /// digests are kept, so an estimate can still be traced to its input).
    #[arg(long, env = "SPE_RETAIN_BATCH_PIXELS")]
    pub retain_batch_pixels: bool,
    /// Seconds between sweeps deleting blobs no row references (left behind when a process dies between
    /// a commit and the delete); the first runs at start-up. 0 = never.
    #[arg(long, env = "SPE_BLOB_SWEEP_INTERVAL_SECS", default_value_t = 3600)]
    pub blob_sweep_interval_secs: u64,
    /// A blob is swept only once it is this old (a margin for uploads in flight).
    #[arg(long, env = "SPE_BLOB_SWEEP_MIN_AGE_SECS", default_value_t = DEFAULT_SWEEP_MIN_AGE_SECS)]
    pub blob_sweep_min_age_secs: u64,
    /// Delete finished estimates (with their jobs and batch images) this many days after they finished,
    /// except each model's latest; run with the blob sweep. 0 = keep them forever.
    #[arg(long, env = "SPE_ESTIMATE_RETENTION_DAYS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub estimate_retention_days: u32,
    /// Hosts webhooks may call, comma-separated: names, IP addresses, `host:port`, `*.domain`; empty
    /// allows any host (registering a webhook is admin-only).
    #[arg(long, env = "SPE_WEBHOOK_ALLOWED_HOSTS", default_value = "")]
    pub webhook_allowed_hosts: String,
    /// One webhook delivery attempt's time limit.
    #[arg(long, env = "SPE_WEBHOOK_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_secs: u64,
    /// How long a failing webhook delivery is retried (backoff 1 s doubling to 10 min), from its event.
    #[arg(long, env = "SPE_WEBHOOK_RETRY_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=720))]
    pub webhook_retry_hours: u64,
    /// An admin key `spe_<id>.<secret>` installed at start-up (for containers); never re-enabled once
    /// revoked.
    #[arg(long, env = "SPE_BOOTSTRAP_ADMIN_KEY", hide_env_values = true)]
    pub bootstrap_admin_key: Option<String>,
}

impl ServeArgs {
    /// Every flag at its declared default, the environment ignored: the one set of defaults, for callers
    /// (tests) that start from it and override a few fields.
    pub fn defaults(database_url: &str) -> Self {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let command = Serve::command().mut_args(|a| a.env(None));
        let matches = command
            .try_get_matches_from(["spe", "--database-url", database_url])
            .expect("the declared defaults parse");
        Serve::from_arg_matches(&matches)
            .expect("the declared defaults parse")
            .args
    }
}

pub(super) const DEFAULT_SWEEP_MIN_AGE_SECS: u64 = 3600;

/// A number of seconds (fractions allowed) of at least `MIN`: out-of-range values are refused by clap
/// at start-up, not clamped silently.
fn seconds_at_least<const MIN: u32>(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= f64::from(MIN) => Ok(v),
        Ok(v) => Err(format!(
            "{v} is out of range: it must be at least {MIN} seconds"
        )),
        Err(e) => Err(e.to_string()),
    }
}

impl ServeArgs {
    /// Rules between settings, which clap checks one at a time.
    pub fn check(&self) -> Result<(), String> {
        if self.max_concurrent_uploads >= self.db_connections {
            return Err(format!(
                "--max-concurrent-uploads ({}) must be below --db-connections ({}): each upload holds one of \
                 the API's database connections while it stores its files, and authentication and polling \
                 need the others",
                self.max_concurrent_uploads, self.db_connections
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ServeArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let base = ["spe", "--database-url", "postgres://localhost/spe"];
        Serve::try_parse_from(base.iter().chain(extra).copied()).map(|s| s.args)
    }

    /// Out-of-range values are refused at start-up, never clamped silently.
    #[test]
    fn ranges_are_checked_by_clap() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.lease_secs, 30.0);
        assert_eq!(defaults.db_acquire_timeout_secs, 3);
        let refused: [&[&str]; 7] = [
            &["--lease-secs", "0.2"],
            &["--poll-ms", "5"],
            &["--max-attempts", "0"],
            // `=` so that clap reads the negative number as the value, not as a flag.
            &["--shutdown-grace-secs=-0.5"],
            &["--request-timeout-secs", "0"],
            &["--db-acquire-timeout-secs", "0"],
            &["--db-connections", "1"],
        ];
        for bad in refused {
            let err = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}: {err}"
            );
        }
        assert_eq!(parse(&["--lease-secs", "1.5"]).unwrap().lease_secs, 1.5);
        assert_eq!(
            parse(&["--shutdown-grace-secs=0.5"])
                .unwrap()
                .shutdown_grace_secs,
            0.5
        );
    }

    /// Uploads can never take every connection of the API's pool: authentication and polling keep some.
    #[test]
    fn uploads_must_leave_connections_for_everything_else() {
        assert_eq!(parse(&[]).unwrap().check(), Ok(()));
        let crowded = parse(&["--db-connections", "8", "--max-concurrent-uploads", "8"]).unwrap();
        let e = crowded.check().unwrap_err();
        assert!(e.contains("must be below --db-connections (8)"), "{e}");
        let fits = parse(&["--db-connections", "9", "--max-concurrent-uploads", "8"]).unwrap();
        assert_eq!(fits.check(), Ok(()));
    }

    /// The defaults tests start from are clap's, whatever the environment says.
    #[test]
    fn defaults_are_the_declared_ones() {
        let d = ServeArgs::defaults("postgres://localhost/spe");
        assert_eq!(d.db.database_url, "postgres://localhost/spe");
        assert_eq!((d.lease_secs, d.poll_ms, d.max_queue), (30.0, 1000, 64));
        // `make test` exports SPE_ORT_LIB; the defaults must not pick it up.
        assert_eq!(d.ort_lib, None);
        assert!(!d.cuda.cuda_prefer_nhwc && !d.cuda.cuda_fuse_conv_bias);
    }

    /// The CUDA kernel choices are flags (and SPE_CUDA_* through clap), not read behind its back.
    #[test]
    fn cuda_kernel_choices_are_flags() {
        let a = parse(&["--cuda-prefer-nhwc", "--cuda-fuse-conv-bias"]).unwrap();
        let k: crate::inference::runtime::CudaKernels = a.cuda.into();
        assert!(k.prefer_nhwc && k.fuse_conv_bias);
    }

    /// `spe serve` and the CLI commands share one pixel budget per image.
    #[test]
    fn the_pixel_budget_has_one_default() {
        assert_eq!(
            parse(&[]).unwrap().max_pixels,
            crate::engine::image_io::DEFAULT_MAX_PIXELS
        );
    }
}
