//! Loading ONNX Runtime (`load-dynamic`) and building sessions on the configured execution provider.

use super::session_cache::{PooledSession, SessionCache};
use super::InferenceError;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the ONNX Runtime shared library is looked for, first match wins.
pub const ORT_LIB_ENV: &str = "SPE_ORT_LIB";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    Tensorrt,
}

impl std::str::FromStr for ExecutionProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown execution provider {s:?}: use cpu, cuda or tensorrt"))
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ExecutionProvider {
    const ALL: [ExecutionProvider; 3] = [Self::Cpu, Self::Cuda, Self::Tensorrt];

    /// The lowercase name (also the serde name).
    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Tensorrt => "tensorrt",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Explicit path of libonnxruntime; otherwise [`find_library`] searches.
    pub library: Option<PathBuf>,
    pub provider: ExecutionProvider,
    /// When the requested GPU provider cannot be used: true = fail, false = run on CPU (logged).
    pub provider_required: bool,
    /// Intra-op threads per session (0 = ONNX Runtime's default).
    pub intra_threads: usize,
    /// Kernel choices for the CUDA provider (from `--cuda-*` / `SPE_CUDA_*`).
    pub cuda: CudaKernels,
    /// Idle sessions kept for reuse by later jobs (0: every load builds a new session).
    pub session_cache: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            library: None,
            provider: ExecutionProvider::Cpu,
            provider_required: false,
            intra_threads: 0,
            cuda: CudaKernels::default(),
            session_cache: 0,
        }
    }
}

/// A loaded ONNX Runtime plus the settings every session is built with.
#[derive(Clone)]
pub struct Runtime {
    config: RuntimeConfig,
    pub library: PathBuf,
    environment: ort::environment::Environment,
    sessions: SessionCache,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("library", &self.library)
            .finish()
    }
}

type Loaded = Result<(PathBuf, ort::environment::Environment), String>;
static ENVIRONMENT: OnceLock<Loaded> = OnceLock::new();

impl Runtime {
    /// Loads the library once per process (ONNX Runtime allows one environment per process).
    pub fn init(config: RuntimeConfig) -> Result<Self, InferenceError> {
        let loaded = ENVIRONMENT.get_or_init(|| {
            let path = match &config.library {
                Some(p) => p.clone(),
                None => find_library().map_err(|e| e.to_string())?,
            };
            let builder = ort::init_from(&path).map_err(|e| {
                format!(
                    "cannot load ONNX Runtime from {}: {e}. Run `make ort` (it installs the PyPI onnxruntime \
                     wheel's library into .ort/) or set {ORT_LIB_ENV} to a libonnxruntime.so.1.x file",
                    path.display()
                )
            })?;
            let environment = builder
                .with_name("spe")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))?;
            Ok((path, environment))
        });
        let (library, environment) = loaded.clone().map_err(InferenceError::RuntimeMissing)?;
        let runtime = Self {
            sessions: SessionCache::new(config.session_cache),
            config,
            library,
            environment,
        };
        runtime.check_provider()?;
        Ok(runtime)
    }

    pub fn provider(&self) -> ExecutionProvider {
        self.config.provider
    }

    /// Logs what will actually run and fails early when a required GPU provider is missing.
    fn check_provider(&self) -> Result<(), InferenceError> {
        use ort::ep::ExecutionProvider as _;
        let available = match self.config.provider {
            ExecutionProvider::Cpu => Ok(true),
            ExecutionProvider::Cuda => ort::ep::CUDA::is_available(),
            ExecutionProvider::Tensorrt => ort::ep::TensorRT::is_available(),
        }
        .unwrap_or(false);
        if available {
            tracing::info!(provider = %self.config.provider, library = %self.library.display(), "ONNX Runtime loaded");
            if self.config.provider != ExecutionProvider::Cpu {
                let CudaKernels {
                    prefer_nhwc,
                    fuse_conv_bias,
                } = self.config.cuda;
                tracing::info!(
                    prefer_nhwc,
                    fuse_conv_bias,
                    "CUDA execution provider options"
                );
            }
            return Ok(());
        }
        let reason = format!(
            "the ONNX Runtime at {} was not built with it (install onnxruntime-gpu and point {ORT_LIB_ENV} at its library)",
            self.library.display()
        );
        if self.config.provider_required {
            return Err(InferenceError::Provider {
                provider: self.config.provider.to_string(),
                reason,
            });
        }
        tracing::warn!(provider = %self.config.provider, %reason, "execution provider unavailable; falling back to cpu");
        Ok(())
    }

    /// A session for `bytes`: an idle one of the same model from the session cache, or a new one on the
    /// configured provider (falling back to CPU unless required). It returns to the cache when dropped.
    pub fn session(&self, bytes: &[u8], model: &str) -> Result<PooledSession, InferenceError> {
        let sha256 = hex::encode(sha2::Sha256::digest(bytes));
        let session = match self.sessions.take(&sha256) {
            Some(session) => session,
            None => self.build_session(bytes, model)?,
        };
        Ok(PooledSession::new(session, sha256, self.sessions.clone()))
    }

    /// Idle sessions in the cache now.
    pub fn idle_sessions(&self) -> usize {
        self.sessions.idle()
    }

    fn build_session(&self, bytes: &[u8], model: &str) -> Result<Session, InferenceError> {
        let load = |e: ort::Error| InferenceError::Load {
            model: model.to_string(),
            reason: e.to_string(),
        };
        let mut builder = Session::builder(&self.environment)
            .map_err(load)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.into()))?;
        if self.config.intra_threads > 0 {
            builder = builder
                .with_intra_threads(self.config.intra_threads)
                .map_err(|e| load(e.into()))?;
        }
        let providers = match self.config.provider {
            ExecutionProvider::Cpu => vec![],
            ExecutionProvider::Cuda => vec![wrap_required(
                self.config.cuda.provider(),
                self.config.provider_required,
            )],
            ExecutionProvider::Tensorrt => vec![
                wrap_required(
                    ort::ep::TensorRT::default().build(),
                    self.config.provider_required,
                ),
                self.config.cuda.provider(),
            ],
        };
        if !providers.is_empty() {
            builder = builder.with_execution_providers(providers).map_err(|e| {
                InferenceError::Provider {
                    provider: self.config.provider.to_string(),
                    reason: e.to_string(),
                }
            })?;
        }
        builder.commit_from_memory(bytes).map_err(load)
    }
}

/// Kernel choices for the CUDA EP. Both are opt-in because they were not measured faster on the GPUs
/// tried so far: `prefer_nhwc` (channels-last kernels: 6% slower on the NCHW fp16 UniverSeg graph on an
/// H200, ORT 1.31; meant for graphs exported with `--layout nhwc`) and `fuse_conv_bias` (cuDNN frontend
/// conv+bias fusion).
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaKernels {
    pub prefer_nhwc: bool,
    pub fuse_conv_bias: bool,
}

impl CudaKernels {
    /// CUDA EP for convolution-heavy graphs such as UniverSeg: cuDNN may take all the workspace it wants.
    fn provider(self) -> ort::ep::ExecutionProviderDispatch {
        ort::ep::CUDA::default()
            .with_prefer_nhwc(self.prefer_nhwc)
            .with_fuse_conv_bias(self.fuse_conv_bias)
            .with_conv_max_workspace(true)
            .with_tf32(true)
            .build()
    }
}

fn wrap_required(
    ep: ort::ep::ExecutionProviderDispatch,
    required: bool,
) -> ort::ep::ExecutionProviderDispatch {
    if required {
        ep.error_on_failure()
    } else {
        ep
    }
}

/// Finds libonnxruntime: $SPE_ORT_LIB, then $ORT_DYLIB_PATH, then `.ort/` in the current directory or
/// beside/above the executable (where `make ort` puts it), then the system loader's default name.
pub fn find_library() -> Result<PathBuf, InferenceError> {
    for var in [ORT_LIB_ENV, "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(p);
            if p.is_file() {
                return Ok(p);
            }
            return Err(InferenceError::RuntimeMissing(format!(
                "{var} points at {}, which is not a file",
                p.display()
            )));
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    for root in &roots {
        for dir in [root.join(".ort"), root.to_path_buf()] {
            if let Some(found) = library_in(&dir) {
                return Ok(found);
            }
        }
    }
    Err(InferenceError::RuntimeMissing(format!(
        "ONNX Runtime (libonnxruntime.so) was not found. Run `make ort` in the spe checkout (it installs the \
         PyPI onnxruntime wheel's library into .ort/), or set {ORT_LIB_ENV}=/path/to/libonnxruntime.so.1.x"
    )))
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .collect();
    found.sort();
    found.pop()
}
