//! The orphaned-blob sweep: blobs left behind by a crash between a commit and the delete (a finished
//! batch's pixels, stray writes) are deleted by `store::sweep_orphans`, by `spe serve` in the background
//! and by `spe admin sweep-blobs`, while every blob a row references stays and the service keeps working.

use crate::common::*;
use bytes::Bytes;
use spe::store::{self, BlobStore};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn assert_present(blobs: &BlobStore, shas: &BTreeSet<String>) {
    for sha in shas {
        assert!(
            blobs.exists(sha).await.unwrap(),
            "referenced blob {sha} is gone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_deletes_crash_leftovers_and_keeps_referenced_blobs() {
    let app = TestApp::start().await;
    let blobs = BlobStore::open(&app.blob_dir.path().display().to_string()).unwrap();
    let (id, _) = calibrated_model(&app, "sweep").await;
    estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    settled_footprint(&app).await;

    // What a crash just after the estimate's commit leaves: its batch pixels, no longer referenced (the
    // rows keep their digests), plus a blob whose rows never committed.
    let purged: BTreeSet<String> = sqlx::query_scalar(
        "SELECT i.image_sha256 FROM image_set_items i JOIN image_sets s ON s.id = i.set_id
          WHERE s.pixels_purged_at IS NOT NULL",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut leftovers = BTreeSet::new();
    for f in sorted_files(&synthetic().join("batch")) {
        let (sha, created) = blobs
            .put(Bytes::from(std::fs::read(f).unwrap()))
            .await
            .unwrap();
        assert!(created, "the finished batch's pixels were deleted");
        assert!(purged.contains(&sha), "{sha} is not a purged batch image");
        leftovers.insert(sha);
    }
    let (stray, _) = blobs
        .put(Bytes::from_static(b"rows never committed"))
        .await
        .unwrap();
    leftovers.insert(stray);
    // Something not laid out as a blob is not the sweep's to delete.
    let foreign = app.blob_dir.path().join("sha256/00/not-a-digest");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::fs::write(&foreign, b"keep").unwrap();

    let kept = referenced(&app).await;
    assert!(!kept.is_empty());
    assert!(kept.is_disjoint(&leftovers));

    // Younger than the margin: nothing goes.
    let removed = store::sweep_orphans(&app.pool, &blobs, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 0);
    assert!(blobs.exists(leftovers.first().unwrap()).await.unwrap());

    let removed = store::sweep_orphans(&app.pool, &blobs, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, leftovers.len());
    for sha in &leftovers {
        assert!(!blobs.exists(sha).await.unwrap(), "orphan {sha} survived");
    }
    assert_present(&blobs, &kept).await;
    assert!(foreign.exists());
    assert_eq!(blobs.count().await.unwrap(), kept.len() + 1);
    // A second sweep finds nothing left to do.
    let removed = store::sweep_orphans(&app.pool, &blobs, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 0);

    // The model, its reference set and its calibration still serve an estimate.
    estimate_ok(&app, &id, images_form(&synthetic().join("batch"))).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sweeps_in_the_background_without_hurting_uploads() {
    let app =
        TestApp::configured(|a| (a.blob_sweep_interval_secs, a.blob_sweep_min_age_secs) = (1, 0))
            .await;
    let blobs = BlobStore::open(&app.blob_dir.path().display().to_string()).unwrap();
    // While another process holds the sweep lock, this one's ticks leave the orphan alone.
    let mut other = app.pool.acquire().await.unwrap();
    sweep_lock(&mut other, "SELECT pg_advisory_lock($1, $2)").await;
    let (orphan, _) = blobs.put(Bytes::from_static(b"left behind")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        blobs.exists(&orphan).await.unwrap(),
        "swept while another process was sweeping"
    );
    sweep_lock(&mut other, "SELECT pg_advisory_unlock($1, $2)").await;
    drop(other);
    let started = Instant::now();
    while blobs.exists(&orphan).await.unwrap() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the background sweep never deleted the orphan"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Uploads while sweeps run every second with no age margin: the blob locks alone keep them whole.
    model_with_reference(&app, "swept").await;
    model_with_reference(&app, "swept-again").await;
    let kept = referenced(&app).await;
    assert!(!kept.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_present(&blobs, &kept).await;
    app.stop().await;
}

/// Runs `sql` (taking or releasing an advisory lock) on the sweep lock's key over `conn`.
async fn sweep_lock(conn: &mut sqlx::PgConnection, sql: &str) {
    let (class, id) = store::SWEEP_LOCK;
    let query = sqlx::query(sql).bind(class).bind(id);
    query.execute(conn).await.unwrap();
}

/// `spe admin sweep-blobs` on the app's database and blob store; returns its stdout.
async fn admin_sweep(app: &TestApp, min_age_secs: &str) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_spe"))
        .args(["admin", "sweep-blobs", "--min-age-secs", min_age_secs])
        .arg("--blob-store")
        .arg(app.blob_dir.path())
        .env("DATABASE_URL", &app.database_url)
        .output()
        .await
        .unwrap();
    succeeded_stdout(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sweep_blobs_command_prints_the_count() {
    let app = TestApp::start().await;
    let blobs = BlobStore::open(&app.blob_dir.path().display().to_string()).unwrap();
    model_with_reference(&app, "cli").await;
    let (orphan, _) = blobs.put(Bytes::from_static(b"orphan")).await.unwrap();
    let kept = referenced(&app).await;
    assert_eq!(admin_sweep(&app, "3600").await, "0\n");
    assert!(blobs.exists(&orphan).await.unwrap());
    assert_eq!(admin_sweep(&app, "0").await, "1\n");
    assert!(!blobs.exists(&orphan).await.unwrap());
    assert_present(&blobs, &kept).await;
    app.stop().await;
}

/// A local blob emptied by a power loss (what an un-fsynced rename can leave) is written again by the
/// next upload of the same bytes instead of being trusted, and interrupted writes' temp files are swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_local_blob_store_repairs_and_sweeps_what_a_crash_leaves() {
    let app = TestApp::start().await;
    let root = app.blob_dir.path().to_path_buf();
    let blobs = BlobStore::open(&root.display().to_string()).unwrap();
    let bytes = Bytes::from_static(b"the pixels of one image, more or less");
    let (sha, created) = blobs.put(bytes.clone()).await.unwrap();
    assert!(created);
    let file = root.join("sha256").join(&sha[..2]).join(&sha);
    std::fs::write(&file, b"").unwrap();
    let (_, rewritten) = blobs.put(bytes.clone()).await.unwrap();
    assert!(rewritten, "an emptied blob was trusted");
    assert_eq!(std::fs::read(&file).unwrap(), bytes.as_ref());
    assert_eq!(blobs.get(&sha).await.unwrap(), bytes);

    // Temp files of interrupted writes: old ones go, a fresh one (a write in flight) stays.
    let old = root.join("sha256").join(&sha[..2]).join(format!("{sha}#7"));
    let fresh = root.join("sha256").join(&sha[..2]).join(format!("{sha}#8"));
    std::fs::write(&old, b"half").unwrap();
    std::fs::write(&fresh, b"half").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    store::sweep_orphans(&app.pool, &blobs, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(!old.exists(), "an old temp file was left");
    assert!(fresh.exists(), "a write in flight was swept");
    assert!(file.exists(), "a young blob was swept");
    app.stop().await;
}

/// A large upload holds at most 256 blob locks, however many blobs it writes, so a few 1000-image sets
/// cannot exhaust PostgreSQL's lock table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_uploads_hold_a_bounded_number_of_blob_locks() {
    let app = TestApp::start().await;
    let blobs = BlobStore::open(&app.blob_dir.path().display().to_string()).unwrap();
    let mut staged = spe::store::blobs::Staged::begin(&app.pool).await.unwrap();
    for i in 0..1500u32 {
        staged
            .put(&blobs, Bytes::from(format!("blob number {i}").into_bytes()))
            .await
            .unwrap();
    }
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .fetch_one(staged.tx())
    .await
    .unwrap();
    assert!(held <= 256, "one upload holds {held} advisory locks");
    assert!(
        held > 100,
        "the blobs should spread over the buckets: {held}"
    );
    staged.rollback().await.unwrap();
    app.stop().await;
}
