//! `spe serve`, `spe migrate`, `spe keys`, `spe admin`: configuration from flags/env, start-up, graceful
//! shutdown.

use crate::api::{self, AppState, Limits};
use crate::inference::{Runtime, RuntimeConfig};
use crate::jobs::{self, deliver::DeliveryConfig, run::Ctx, WorkerConfig};
use crate::store::{self, keys, BlobStore};
use crate::webhooks::AllowList;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

mod args;
use args::DEFAULT_SWEEP_MIN_AGE_SECS;
pub use args::{CudaArgs, DbArgs, Role, ServeArgs};

#[derive(Subcommand, Clone, Debug)]
pub enum KeysCommand {
    /// Create an API key; the key is printed once on stdout (only its SHA-256 is stored).
    Create {
        #[arg(long, value_parser = parse_role)]
        role: keys::Role,
        /// A note on who or what uses the key.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by its id (the part between `spe_` and the dot) or the whole key.
    Revoke { key_id: String },
}

#[derive(Subcommand, Clone, Debug)]
pub enum AdminCommand {
    /// Delete blobs no row references (what a crash between a commit and the delete leaves); prints how
    /// many. Safe while the service runs.
    SweepBlobs {
        /// Blob store: a local directory, or s3://bucket[/prefix].
        #[arg(long, env = "SPE_BLOB_STORE", default_value = ".spe-data/blobs")]
        blob_store: String,
        /// Only blobs at least this old (a margin for uploads in flight).
        #[arg(long, default_value_t = DEFAULT_SWEEP_MIN_AGE_SECS)]
        min_age_secs: u64,
    },
}

#[derive(Args, Clone, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Args, Clone, Debug)]
pub struct KeysArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

fn parse_role(s: &str) -> Result<keys::Role, String> {
    s.parse()
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// How long the workers and the CLI wait for a pooled connection (the API's own: --db-acquire-timeout-secs).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(url: &str, connections: u32) -> Result<sqlx::PgPool> {
    connect_within(url, connections, ACQUIRE_TIMEOUT).await
}

async fn connect_within(url: &str, connections: u32, acquire: Duration) -> Result<sqlx::PgPool> {
    store::connect(url, connections, acquire)
        .await
        .context("cannot connect to Postgres (is DATABASE_URL right and the server up? `make run` starts one)")
}

/// Connects and brings the schema up to date; a schema newer than this binary is refused clearly.
async fn database(url: &str, connections: u32) -> Result<sqlx::PgPool> {
    database_within(url, connections, ACQUIRE_TIMEOUT).await
}

async fn database_within(url: &str, connections: u32, acquire: Duration) -> Result<sqlx::PgPool> {
    let pool = connect_within(url, connections, acquire).await?;
    if let store::Schema::Newer { applied, known } = store::schema(&pool).await? {
        bail!(newer_schema(applied, known));
    }
    store::migrate(&pool)
        .await
        .context("cannot apply the database migrations")?;
    Ok(pool)
}

/// For `--no-migrate`: the schema must be exactly this binary's.
async fn schema_matches(pool: &sqlx::PgPool) -> Result<()> {
    match store::schema(pool).await? {
        store::Schema::Current => Ok(()),
        store::Schema::Newer { applied, known } => bail!(newer_schema(applied, known)),
        store::Schema::Behind { applied, known } => bail!(
            "the database schema is at migration {applied} and this spe needs {known}; run `spe migrate` \
             first (or start without --no-migrate)"
        ),
    }
}

fn newer_schema(applied: i64, known: i64) -> String {
    format!(
        "the database schema is at migration {applied}, newer than this spe knows (up to {known}): a newer \
         spe migrated it; run that version (or newer), not this one"
    )
}

/// `spe migrate`
pub fn migrate(args: DbArgs) -> Result<()> {
    tokio_runtime()?.block_on(async {
        database(&args.database_url, 2).await?;
        eprintln!("database schema is up to date");
        Ok(())
    })
}

/// `spe keys ...`
pub fn keys_command(args: KeysArgs) -> Result<()> {
    tokio_runtime()?.block_on(async {
        let pool = database(&args.db.database_url, 2).await?;
        match args.command {
            KeysCommand::Create { role, name } => {
                let (key, token) = keys::create(&pool, role, &name).await?;
                eprintln!(
                    "created {} key {} (shown once; store it safely)",
                    key.role.as_str(),
                    key.key_id
                );
                println!("{token}");
            }
            KeysCommand::List => {
                for k in keys::list(&pool).await? {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        k.key_id,
                        k.role.as_str(),
                        state,
                        k.created_at.to_rfc3339(),
                        k.name
                    );
                }
            }
            KeysCommand::Revoke { key_id } => {
                if !keys::revoke(&pool, &key_id).await? {
                    bail!("no active key with id {key_id:?}");
                }
                eprintln!("revoked {key_id}");
            }
        }
        Ok(())
    })
}

/// `spe admin ...`
pub fn admin_command(args: AdminArgs) -> Result<()> {
    tokio_runtime()?.block_on(async {
        let pool = database(&args.db.database_url, 2).await?;
        match args.command {
            AdminCommand::SweepBlobs {
                blob_store,
                min_age_secs,
            } => {
                let blobs = BlobStore::open(&blob_store).context("cannot open the blob store")?;
                let removed =
                    store::sweep_orphans(&pool, &blobs, Duration::from_secs(min_age_secs)).await?;
                println!("{removed}");
                eprintln!("deleted {removed} orphaned blobs from {blobs:?}");
            }
        }
        Ok(())
    })
}

/// Serves until `shutdown`; then /readyz answers 503 for `drain` while requests are still served, the
/// listener closes, and requests in flight get `grace` to finish before their connections are dropped.
async fn serve_http(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    grace: Duration,
) -> std::io::Result<()> {
    let draining = state.draining.clone();
    let (closing_tx, closing) = watch::channel(false);
    let app = api::app(state);
    let server = serve_connections(listener, app, closing);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        _ = shutdown.wait_for(|s| *s) => {}
    }
    draining.store(true, Ordering::SeqCst);
    tracing::info!(drain_s = drain.as_secs(), "draining: /readyz answers 503");
    tokio::select! {
        r = &mut server => return r,
        _ = tokio::time::sleep(drain) => {}
    }
    let _ = closing_tx.send(true);
    tokio::select! {
        r = &mut server => r,
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(grace_s = grace.as_secs_f64(), "requests still in flight after the shutdown grace; closing them");
            Ok(())
        }
    }
}

/// Longest time a client may take to send its request line and headers; then the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `closing`, then waits for the open ones to finish (the caller bounds that).
/// HTTP/1 header reads time out after [`HEADER_READ_TIMEOUT`], so a client trickling its headers cannot
/// hold a connection (axum::serve sets no timer, without which hyper never enforces its timeout).
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut closing: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    tokio::pin!(closed);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut closed => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// `spe serve`
pub fn serve(args: ServeArgs) -> Result<()> {
    // 0 threads = rayon's default (one per core).
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .start_handler(|_| crate::background::lower_priority())
        .build_global()
        .context("cannot size the thread pool")?;
    let runtime = tokio_runtime()?;
    let result = runtime.block_on(async {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: no new requests or jobs; finishing running ones");
            let _ = tx.send(true);
        });
        // A worker-only process listens too, for /healthz, /readyz and /metrics.
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("cannot listen on {}", args.bind))?;
        let listener = Some(listener);
        run(args, listener, rx).await
    });
    // A job handed back at shutdown may still be computing on a blocking thread; don't wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the service until `shutdown` turns true: the API on `listener` (if any) and the workers (if the
/// role has them). Tests call this with a port-0 listener.
pub async fn run(
    args: ServeArgs,
    listener: Option<tokio::net::TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    args.check().map_err(anyhow::Error::msg)?;
    let acquire = Duration::from_secs(args.db_acquire_timeout_secs);
    let pool = if args.no_migrate {
        let pool = connect_within(&args.db.database_url, args.db_connections, acquire).await?;
        schema_matches(&pool).await?;
        pool
    } else {
        database_within(&args.db.database_url, args.db_connections, acquire).await?
    };
    if let Some(token) = args
        .bootstrap_admin_key
        .as_deref()
        .filter(|t| !t.is_empty())
    {
        match keys::ensure_bootstrap(&pool, token)
            .await
            .map_err(anyhow::Error::msg)?
        {
            keys::Bootstrap::Installed => {
                tracing::info!("bootstrap admin key from SPE_BOOTSTRAP_ADMIN_KEY installed")
            }
            keys::Bootstrap::Revoked => tracing::warn!(
                "SPE_BOOTSTRAP_ADMIN_KEY names a revoked key; it stays revoked (set a new key id to rotate)"
            ),
        }
    }
    let blobs = BlobStore::open(&args.blob_store).context("cannot open the blob store")?;
    let config = RuntimeConfig {
        library: args.ort_lib.clone(),
        provider: args.provider,
        provider_required: args.provider_required,
        intra_threads: args.threads,
        cuda: args.cuda.into(),
        session_cache: args.session_cache as usize,
    };
    let runtime =
        tokio::task::spawn_blocking(move || Runtime::init(config).map_err(|e| e.to_string()))
            .await?;
    let has_workers = args.role != Role::Api && args.workers > 0;
    if has_workers {
        if let Err(e) = &runtime {
            bail!("workers need ONNX Runtime: {e}");
        }
    }
    if let Err(e) = &runtime {
        tracing::warn!(error = %e, "ONNX Runtime unavailable: /readyz fails and model registration answers 503");
    }
    let _ = api::ops::prometheus();
    // In the background: readiness does not wait for a listing of the whole store.
    let sweeper = (args.blob_sweep_interval_secs > 0).then(|| {
        tokio::spawn(jobs::sweep::sweep_blobs(
            pool.clone(),
            blobs.clone(),
            Duration::from_secs(args.blob_sweep_interval_secs),
            Duration::from_secs(args.blob_sweep_min_age_secs),
            (args.estimate_retention_days > 0)
                .then(|| Duration::from_secs(u64::from(args.estimate_retention_days) * 86_400)),
            shutdown.clone(),
        ))
    });
    let workers = match (&runtime, has_workers) {
        (Ok(rt), true) => {
            // The workers' own connections: claims, heartbeats and result writes never wait behind
            // uploads holding the API's pool.
            let worker_pool = connect(&args.db.database_url, args.workers as u32 * 2 + 2).await?;
            tokio::spawn(jobs::deliver::run(
                worker_pool.clone(),
                DeliveryConfig {
                    allowed: AllowList::parse(&args.webhook_allowed_hosts),
                    timeout: Duration::from_secs(args.webhook_timeout_secs),
                    max_delay: Duration::from_secs(600),
                    give_up_after: Duration::from_secs(args.webhook_retry_hours * 3600),
                    poll: Duration::from_millis(args.poll_ms),
                    concurrency: 4,
                },
                shutdown.clone(),
            ));
            let ctx = Arc::new(Ctx {
                pool: worker_pool,
                blobs: blobs.clone(),
                runtime: rt.clone(),
                max_pixels: args.max_pixels,
                retain_batch_pixels: args.retain_batch_pixels,
            });
            let config = WorkerConfig {
                count: args.workers,
                lease: Duration::from_secs_f64(args.lease_secs),
                poll: Duration::from_millis(args.poll_ms),
                max_attempts: args.max_attempts,
                shutdown_grace: Duration::from_secs_f64(args.shutdown_grace_secs),
                retry_window: Duration::from_secs(args.job_retry_window_secs),
                deadline: (args.job_deadline_secs > 0)
                    .then(|| Duration::from_secs(args.job_deadline_secs)),
            };
            Some(tokio::spawn(jobs::run_workers(
                ctx,
                config,
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    let server = match listener {
        Some(listener) => {
            let state = AppState {
                app: crate::app::Context {
                    pool,
                    blobs,
                    runtime,
                    limits: Limits {
                        max_body_bytes: args.max_body_mb.saturating_mul(1024 * 1024),
                        max_images: args.max_images,
                        max_pixels: args.max_pixels,
                        max_volume_voxels: args.max_volume_voxels,
                        max_request_pixels: args.max_request_pixels,
                        max_queue: args.max_queue,
                        retry_after_s: args.retry_after_secs,
                        request_timeout: Duration::from_secs(args.request_timeout_secs),
                    },
                    max_attempts: args.max_attempts,
                    webhook_hosts: AllowList::parse(&args.webhook_allowed_hosts),
                },
                open_ops: !args.protect_ops,
                draining: Arc::new(AtomicBool::new(false)),
                uploads: Arc::new(tokio::sync::Semaphore::new(
                    args.max_concurrent_uploads as usize,
                )),
                serves_api: args.role != Role::Worker,
            };
            tracing::info!(address = %listener.local_addr()?, role = ?args.role, "serving");
            let drain = Duration::from_secs(args.drain_secs);
            let grace = Duration::from_secs_f64(args.shutdown_grace_secs);
            Some(tokio::spawn(serve_http(
                listener,
                state,
                shutdown.clone(),
                drain,
                grace,
            )))
        }
        None => None,
    };
    if let Some(server) = server {
        server.await?.context("HTTP server failed")?;
    }
    if let Some(workers) = workers {
        workers.await?;
    }
    if let Some(sweeper) = sweeper {
        // Mid-sweep, its open transaction rolls back: at worst one blob waits for the next sweep.
        sweeper.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
