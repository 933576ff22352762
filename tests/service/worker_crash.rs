//! Workers as separate processes (the real `spe` binary): killed with SIGKILL mid-job, the job is taken
//! over after its lease expires and completes once; on SIGTERM a running job is handed back.

use crate::common::*;
use serde_json::Value;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn spawn_worker(app: &TestApp, grace_secs: &str) -> ChildProcess {
    spawn_spe(
        Command::new(env!("CARGO_BIN_EXE_spe"))
            .args([
                "serve",
                "--role",
                "worker",
                "--lease-secs",
                "2",
                "--poll-ms",
                "200",
                "--bind",
                "127.0.0.1:0",
            ])
            .args(["--shutdown-grace-secs", grace_secs])
            .arg("--blob-store")
            .arg(app.blob_dir.path())
            .env("DATABASE_URL", &app.database_url),
    )
}

/// A calibration slow enough (many repetitions) to be caught mid-run.
async fn slow_calibration(app: &TestApp) -> String {
    let id = &reference_model_id(app, "crash").await;
    let params = r#"{"support_size":8,"repetitions":40,"seed":3}"#;
    queue_synthetic_calibration(app, id, params).await
}

/// Waits until the job is running and has made progress (so the worker is truly mid-job).
async fn wait_running(app: &TestApp, location: &str) -> Value {
    let started = Instant::now();
    loop {
        let v = app.get_json(location, &app.reader).await;
        if v["status"] == "running" && v["progress"]["fraction"].as_f64().unwrap() > 0.1 {
            return v;
        }
        assert_ne!(
            v["status"], "succeeded",
            "the job finished before it could be interrupted; make it slower"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never started: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts another worker and waits for it to finish the job at `location`, the job's `attempts`th
/// attempt (`why`), with exactly one result.
async fn finish_in_a_new_worker(app: &TestApp, location: &str, attempts: u64, why: &str) {
    let _worker = spawn_worker(app, "5");
    let done = wait_succeeded(app, location, Duration::from_secs(240)).await;
    assert_eq!(done["attempts"], attempts, "{why}");
    assert_eq!(results(app).await, (1, 1), "exactly one result");
}

fn api_only() -> ServeArgs {
    ServeArgs {
        role: spe::service::Role::Api,
        workers: 0,
        ..test_args()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_job_completes_once() {
    let app = TestApp::with(api_only()).await;
    let location = slow_calibration(&app).await;
    let mut worker = spawn_worker(&app, "5");
    let running = wait_running(&app, &location).await;
    assert_eq!(running["attempts"], 1);
    worker.0.kill().unwrap(); // SIGKILL: no cleanup, the lease just stops being renewed
    worker.0.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orphaned = app.get_json(&location, &app.reader).await;
    assert_eq!(
        orphaned["status"], "running",
        "nobody finished it: {orphaned}"
    );
    assert!(orphaned["result"].is_null());
    let why = "the restarted worker took over the expired lease";
    finish_in_a_new_worker(&app, &location, 2, why).await;
    let state: (String, Option<uuid::Uuid>) = sqlx::query_as("SELECT state, lease_token FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, ("succeeded".to_string(), None));
    app.stop().await;
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigterm_hands_the_job_back() {
    let app = TestApp::with(api_only()).await;
    let location = slow_calibration(&app).await;
    let mut worker = spawn_worker(&app, "0");
    wait_running(&app, &location).await;
    sigterm(&worker.0);
    let status = worker.0.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let released = app.get_json(&location, &app.reader).await;
    assert_eq!(
        released["status"], "queued",
        "handed back at once, not left to its lease: {released}"
    );
    let why = "an interrupted attempt is not counted against the retry limit";
    finish_in_a_new_worker(&app, &location, 1, why).await;
    app.stop().await;
}

/// Calibrations with a result, and all calibrations.
async fn results(app: &TestApp) -> (i64, i64) {
    sqlx::query_as("SELECT count(*) FILTER (WHERE result IS NOT NULL), count(*) FROM calibrations")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}
