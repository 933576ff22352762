//! The S3 blob store against a real S3 server: s3s-fs, a file-backed S3 implementation that `make test`
//! installs into .tools/ (or $S3S_FS). A `spe serve` process keeping its blobs at s3://bucket/prefix
//! calibrates and estimates, deletes a finished batch's pixels from the bucket, and `spe admin sweep-blobs`
//! sweeps that bucket.

use crate::common::*;
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "spe-blobs";
const PREFIX: &str = "store";
const ACCESS_KEY: &str = "spe-test";
const SECRET_KEY: &str = "spe-test-secret";

fn s3s_fs() -> PathBuf {
    let path = std::env::var_os("S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/bin/s3s-fs"));
    assert!(
        path.is_file(),
        "{} is missing: `make test` installs it (cargo install s3s-fs), or set S3S_FS",
        path.display()
    );
    path
}

/// The AWS_* settings `spe` reads for an s3:// blob store (object_store's `from_env`).
fn with_s3_env(cmd: &mut Command, s3_port: u16) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{s3_port}"))
        .env("AWS_ALLOW_HTTP", "true")
}

fn start_s3(root: &Path) -> (ChildProcess, u16) {
    let port = free_port();
    let child = Command::new(s3s_fs())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start s3s-fs");
    let mut s3 = ChildProcess(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(!s3.exited(), "s3s-fs stopped during start-up");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "s3s-fs never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (s3, port)
}

/// The blob digests stored in the bucket (s3s-fs keeps each object as a file named by its key).
fn stored(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                out.insert(name.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&root.join(BUCKET).join(PREFIX), &mut out);
    out
}

/// Waits until the bucket holds exactly the blobs rows reference (deletes follow their commit).
async fn settled(app: &TestApp, root: &Path) -> BTreeSet<String> {
    for _ in 0..100 {
        let (rows, objects) = (referenced(app).await, stored(root));
        if rows == objects {
            return objects;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the bucket never matched the rows: rows {:?}, bucket {:?}",
        referenced(app).await,
        stored(root)
    );
}

fn admin_sweep(database_url: &str, s3_port: u16) -> String {
    let out = with_s3_env(&mut Command::new(env!("CARGO_BIN_EXE_spe")), s3_port)
        .args(["admin", "sweep-blobs", "--min-age-secs", "0"])
        .args(["--blob-store", &format!("s3://{BUCKET}/{PREFIX}")])
        .env("DATABASE_URL", database_url)
        .output()
        .unwrap();
    succeeded_stdout(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_blob_store_holds_the_blobs_of_a_whole_estimate_and_is_swept() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap(); // s3s-fs: a bucket is a folder
    let (_s3, s3_port) = start_s3(root.path());

    let database_url = fresh_database().await;
    let port = free_port();
    let mut server = spawn_spe(
        with_s3_env(&mut Command::new(env!("CARGO_BIN_EXE_spe")), s3_port)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--blob-store", &format!("s3://{BUCKET}/{PREFIX}")])
            .env("DATABASE_URL", &database_url),
    );
    let url = format!("http://127.0.0.1:{port}");
    let bucket_root = root.path().to_path_buf();
    let app = TestApp::external(url, database_url.clone(), root, || server.exited()).await;

    let (id, _) = calibrated_model(&app, "s3").await;
    let before = settled(&app, &bucket_root).await;
    assert!(
        before.len() > 10,
        "the model, its reference and calibration images live in the bucket: {before:?}"
    );

    let done = estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    assert!(
        done["result"]["metrics"]["dice"]["estimate"].is_number(),
        "{done}"
    );
    // The batch was read back from the bucket, and its pixels are gone from it now.
    assert_eq!(settled(&app, &bucket_root).await, before);

    // A blob left behind by a crash (no row names it) is swept; everything referenced stays.
    let orphan = "ab".repeat(32);
    let dir = bucket_root.join(BUCKET).join(PREFIX).join("sha256/ab");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&orphan), b"left by a crash").unwrap();
    assert!(stored(&bucket_root).contains(&orphan));
    assert_eq!(admin_sweep(&database_url, s3_port), "1\n");
    assert_eq!(stored(&bucket_root), before);
    assert_eq!(admin_sweep(&database_url, s3_port), "0\n");
    app.stop().await;
}
