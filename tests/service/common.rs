//! The service under test: a fresh database per test (created on the Postgres that `make test` starts),
//! the real `spe::service::run` on a port-0 listener, driven over HTTP with reqwest.

use reqwest::multipart::{Form, Part};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use spe::store::keys::{self, Role};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn synthetic() -> PathBuf {
    repo().join("tests/fixtures/synthetic")
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

pub fn base_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is unset: the service tests need Postgres; run them with `make test` (it starts one)")
    })
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = url
        .split_once('?')
        .map_or((url, None), |(h, q)| (h, Some(q)));
    let slash = head.rfind('/').expect("DATABASE_URL has no database name");
    let mut out = format!("{}/{name}", &head[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A loopback port nothing listens on right now (for a child `spe serve`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database() -> String {
    let admin = base_url();
    let name = format!("spe_test_{}", uuid::Uuid::new_v4().simple());
    let pool = PgPool::connect(&admin)
        .await
        .expect("cannot connect to DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    with_database(&admin, &name)
}

pub use spe::service::ServeArgs;

/// What every test's service starts from: `spe serve`'s declared defaults with the few a test suite needs
/// otherwise (faster polls and leases, smaller limits, no background sweep or drain). A test overrides
/// only the fields it is about: `ServeArgs { workers: 0, ..test_args() }`. The database and blob store
/// are filled in per test.
pub fn test_args() -> ServeArgs {
    ServeArgs {
        bind: "127.0.0.1:0".parse().unwrap(),
        poll_ms: 200,
        lease_secs: 5.0,
        shutdown_grace_secs: 5.0,
        max_body_mb: 64,
        max_images: 256,
        max_pixels: 4_000_000,
        max_volume_voxels: 1 << 24,
        retry_after_secs: 7,
        request_timeout_secs: 120,
        // Stop at once; the drain test sets its own.
        drain_secs: 0,
        db_connections: 8,
        max_concurrent_uploads: 6,
        // No background sweep, so no test races one it did not ask for.
        blob_sweep_interval_secs: 0,
        job_deadline_secs: 0,
        ..ServeArgs::defaults("postgres://set-per-test")
    }
}

/// A child process, killed when dropped so a failing test leaves none behind.
pub struct ChildProcess(pub std::process::Child);

impl ChildProcess {
    pub fn exited(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_some()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` (a `spe` process) in the repository, logging its warnings and `spe`'s info lines to
/// the test's stderr; it is killed when the returned value is dropped.
pub fn spawn_spe(command: &mut std::process::Command) -> ChildProcess {
    use std::process::Stdio;
    let child = command
        .env("RUST_LOG", "warn,spe=info")
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start the spe binary");
    ChildProcess(child)
}

pub struct TestApp {
    pub url: String,
    pub database_url: String,
    pub blob_dir: tempfile::TempDir,
    pub pool: PgPool,
    pub client: Client,
    pub admin: String,
    pub submitter: String,
    pub reader: String,
    shutdown: watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// `args` on a test's database and blob directory.
pub fn serve_args(database_url: &str, blob_dir: &Path, args: ServeArgs) -> ServeArgs {
    ServeArgs {
        db: spe::service::DbArgs {
            database_url: database_url.to_string(),
        },
        blob_store: blob_dir.display().to_string(),
        ..args
    }
}

impl TestApp {
    pub async fn start() -> Self {
        Self::with(test_args()).await
    }

    /// The service on `test_args()` as `configure` changes them.
    pub async fn configured(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut args = test_args();
        configure(&mut args);
        Self::with(args).await
    }

    pub async fn with(o: ServeArgs) -> Self {
        let database_url = fresh_database().await;
        let blob_dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, rx) = watch::channel(false);
        let args = serve_args(&database_url, blob_dir.path(), o);
        let server = tokio::spawn(spe::service::run(args, Some(listener), rx));
        let Some(mut app) = Self::ready(url, database_url, blob_dir, || server.is_finished()).await
        else {
            let err = server.await.unwrap().err().map(|e| format!("{e:#}"));
            panic!("the service stopped during start-up: {err:?}");
        };
        app.server = Some(server);
        app.shutdown = shutdown;
        app
    }

    /// A service someone else started (a child `spe serve` process), once it answers; `stopped` tells
    /// whether it died during start-up. `blob_dir` is where its blobs land as files, for `footprint`.
    pub async fn external(
        url: String,
        database_url: String,
        blob_dir: tempfile::TempDir,
        stopped: impl FnMut() -> bool,
    ) -> Self {
        Self::ready(url, database_url, blob_dir, stopped)
            .await
            .expect("the service stopped during start-up")
    }

    /// None when `stopped` says the service died before answering.
    async fn ready(
        url: String,
        database_url: String,
        blob_dir: tempfile::TempDir,
        mut stopped: impl FnMut() -> bool,
    ) -> Option<Self> {
        let client = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let started = Instant::now();
        // run() migrates before serving; wait until it answers.
        loop {
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
                if r.status().is_success() || r.status() == StatusCode::UNAUTHORIZED {
                    break;
                }
            }
            if stopped() {
                return None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the service did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pool = PgPool::connect(&database_url).await.unwrap();
        let admin = keys::create(&pool, Role::Admin, "test admin")
            .await
            .unwrap()
            .1;
        let submitter = keys::create(&pool, Role::Submitter, "test submitter")
            .await
            .unwrap()
            .1;
        let reader = keys::create(&pool, Role::Reader, "test reader")
            .await
            .unwrap()
            .1;
        Some(Self {
            url,
            database_url,
            blob_dir,
            pool,
            client,
            admin,
            submitter,
            reader,
            shutdown: watch::channel(false).0,
            server: None,
        })
    }

    /// Begins shutdown (as SIGTERM does) without waiting for it.
    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Whether the in-process service has stopped.
    pub fn server_finished(&self) -> bool {
        self.server.as_ref().is_none_or(|s| s.is_finished())
    }

    /// Stops the service and drops the test's database (a failing test keeps its own, for a look).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
        self.pool.close().await;
        let name = self
            .database_url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_string();
        if let Ok(admin) = PgPool::connect(&base_url()).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A request to `path` authenticated with `key`.
    pub fn request(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.client.request(method, self.at(path)).bearer_auth(key)
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        send(self.request(Method::GET, path, key)).await
    }

    pub async fn get_json(&self, path: &str, key: &str) -> Value {
        let r = self.get(path, key).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    pub async fn post_form(&self, path: &str, key: &str, form: Form) -> Response {
        send(self.request(Method::POST, path, key).multipart(form)).await
    }

    pub async fn put_form(&self, path: &str, key: &str, form: Form) -> Response {
        send(self.request(Method::PUT, path, key).multipart(form)).await
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> Response {
        send(self.request(Method::POST, path, key).json(body)).await
    }

    /// A request without a body (`DELETE`, `POST .../activate`).
    pub async fn send_empty(&self, method: Method, path: &str, key: &str) -> Response {
        send(self.request(method, path, key)).await
    }

    /// Polls a job resource until it succeeds or fails.
    pub async fn wait(&self, path: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let v = self.get_json(path, &self.reader).await;
            match v["status"].as_str() {
                Some("succeeded") | Some("failed") => return v,
                _ => {}
            }
            assert!(
                started.elapsed() < limit,
                "{path} did not finish in {limit:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Rows in every table (keys excepted) and blobs in the store.
    pub async fn footprint(&self) -> (i64, usize) {
        let rows: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM models) + (SELECT count(*) FROM reverse_segmenters)
                  + (SELECT count(*) FROM image_sets) + (SELECT count(*) FROM image_set_items)
                  + (SELECT count(*) FROM calibrations) + (SELECT count(*) FROM calibration_checkpoints)
                  + (SELECT count(*) FROM estimates) + (SELECT count(*) FROM jobs)",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        (rows, count_files(self.blob_dir.path()))
    }
}

/// The stdout of a finished `spe` command, which must have succeeded (else its stderr is shown).
pub fn succeeded_stdout(out: std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The string `field` of every item of the array `items`.
pub fn each_str<'a>(items: &'a Value, field: &str) -> Vec<&'a str> {
    let items = items.as_array().unwrap().iter();
    items.map(|i| i[field].as_str().unwrap()).collect()
}

/// Sends a request the test expects an answer to (whatever its status).
pub async fn send(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}

/// Blobs are deleted just after the transaction that drops their rows commits: the footprint once the
/// blob store holds exactly the blobs rows still reference.
pub async fn settled_footprint(app: &TestApp) -> (i64, usize) {
    for _ in 0..100 {
        let referenced: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT sha256) FROM blob_references")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let footprint = app.footprint().await;
        if footprint.1 as i64 == referenced {
            return footprint;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the blob store never matched the rows referencing it");
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_files(&p)
            } else {
                1
            }
        })
        .sum()
}

pub fn file_part(path: &Path) -> Part {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Part::bytes(bytes).file_name(path.file_name().unwrap().to_string_lossy().into_owned())
}

pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// `image` + `label` parts for a labelled directory (images/ and labels/).
pub fn labelled_form(mut form: Form, dir: &Path) -> Form {
    for f in sorted_files(&dir.join("images")) {
        form = form.part("image", file_part(&f));
    }
    for f in sorted_files(&dir.join("labels")) {
        form = form.part("label", file_part(&f));
    }
    form
}

pub fn images_form(dir: &Path) -> Form {
    sorted_files(dir)
        .iter()
        .fold(Form::new(), |f, p| f.part("image", file_part(p)))
}

/// A zip of files: (path inside the zip, bytes).
pub fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        for (name, data) in entries {
            zip.start_file(name.as_str(), opts).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

pub const SPEC: &str = r#"{"input":{"name":"image","channels":1,"scale":"unit"},"output":{"name":"logits","kind":"argmax","foreground_class":1}}"#;

/// Registers the tiny UniverSeg-contract ONNX fixture as a reverse segmenter (201) and returns its body.
pub async fn register_tiny_reverse(app: &TestApp, name: &str) -> Value {
    let form = Form::new()
        .text("name", name.to_string())
        .part("onnx", file_part(&fixture("universeg_tiny.onnx")));
    let r = app
        .post_form("/v1/reverse-segmenters", &app.admin, form)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

/// A registration form: `name`, `spec` and the ONNX file.
pub fn model_form(name: &str, spec: &str, onnx: &Path) -> Form {
    Form::new()
        .text("name", name.to_string())
        .text("spec", spec.to_string())
        .part("onnx", file_part(onnx))
}

/// The synthetic family's last checkpoint, the model most tests register.
pub fn last_checkpoint() -> PathBuf {
    synthetic().join("checkpoints/ckpt_07.onnx")
}

/// Registers a model (201) and returns its body.
pub async fn register_model(app: &TestApp, form: Form) -> Value {
    let r = app.post_form("/v1/models", &app.admin, form).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

/// Attaches the labelled directory `dir` (images/ and labels/) as the model's reference set (200).
pub async fn put_reference_set(app: &TestApp, id: &str, dir: &Path) {
    let form = labelled_form(Form::new(), dir);
    let r = app.put_form(&reference_set(id), &app.admin, form).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

pub fn reference_set(id: &str) -> String {
    format!("/v1/models/{id}/reference-set")
}

/// Registers the synthetic family's model (its last checkpoint) and attaches the reference set.
pub async fn model_with_reference(app: &TestApp, name: &str) -> Value {
    let model = register_model(app, model_form(name, SPEC, &last_checkpoint())).await;
    let id = model["id"].as_str().unwrap();
    put_reference_set(app, id, &synthetic().join("reference")).await;
    model
}

/// The id of a model registered as `model_with_reference` registers it.
pub async fn reference_model_id(app: &TestApp, name: &str) -> String {
    let model = model_with_reference(app, name).await;
    model["id"].as_str().unwrap().to_string()
}

/// The location of a job a response accepted (202).
pub fn accepted_location(r: &Response) -> String {
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Waits for the job at `location` and asserts that it succeeded; returns it.
pub async fn wait_succeeded(app: &TestApp, location: &str, limit: Duration) -> Value {
    let job = app.wait(location, limit).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    job
}

/// Queues a calibration of model `id` from these checkpoints on the labelled directory `dir`, with
/// `params` (none: the defaults) (202); returns its location.
pub async fn queue_calibration(
    app: &TestApp,
    id: &str,
    params: Option<&str>,
    checkpoints: &[PathBuf],
    dir: &Path,
) -> String {
    let form = match params {
        Some(p) => Form::new().text("params", p.to_string()),
        None => Form::new(),
    };
    let form = checkpoints
        .iter()
        .fold(form, |f, c| f.part("checkpoint", file_part(c)));
    let form = labelled_form(form, dir);
    let r = app
        .post_form(&format!("/v1/models/{id}/calibrations"), &app.admin, form)
        .await;
    accepted_location(&r)
}

/// Queues a calibration from every synthetic checkpoint on the synthetic calibration set.
pub async fn queue_synthetic_calibration(app: &TestApp, id: &str, params: &str) -> String {
    let checkpoints = sorted_files(&synthetic().join("checkpoints"));
    let dir = synthetic().join("calibration");
    queue_calibration(app, id, Some(params), &checkpoints, &dir).await
}

/// Fast protocol parameters for tests.
pub const FAST: &str = r#"{"support_size":8,"repetitions":2,"min_area":20,"seed":1}"#;

/// A model with an active calibration (from the synthetic checkpoints), ready for estimates.
pub async fn calibrated_model(app: &TestApp, name: &str) -> (String, Value) {
    let model = model_with_reference(app, name).await;
    let id = model["id"].as_str().unwrap().to_string();
    let location = queue_synthetic_calibration(app, &id, FAST).await;
    let cal = wait_succeeded(app, &location, Duration::from_secs(300)).await;
    (id, cal)
}

/// The digests of every blob some row references.
pub async fn referenced(app: &TestApp) -> std::collections::BTreeSet<String> {
    sqlx::query_scalar("SELECT DISTINCT sha256 FROM blob_references")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Submits an estimate and waits until it has succeeded; returns the finished estimate.
pub async fn estimate_ok(app: &TestApp, id: &str, form: Form) -> Value {
    let r = app
        .post_form(&format!("/v1/models/{id}/estimates"), &app.submitter, form)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap()
    );
    wait_succeeded(app, &accepted_location(&r), Duration::from_secs(120)).await
}

/// Asserts an RFC 9457 problem response with this status; returns its body.
pub async fn expect_problem(r: Response, status: StatusCode) -> Value {
    let got = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    assert_eq!(got, status, "body: {body}");
    assert_eq!(ct, "application/problem+json", "body: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], status.as_u16());
    assert!(v["type"].as_str().unwrap().starts_with("urn:spe:problem:"));
    assert!(!v["detail"].as_str().unwrap().is_empty());
    v
}
