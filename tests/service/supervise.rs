//! The job supervisor against a real database: a panic fails the job, transient failures are retried
//! (without using up attempts, also when scheduling the retry meets the outage) until the retry window
//! is spent, a deadline stops the work, and a lost lease stops it too.

use crate::common::*;
use spe::jobs::queue::{self, Claimed, JobKind};
use spe::jobs::run::{Ctx, Output};
use spe::jobs::supervise::supervise;
use spe::jobs::{JobError, Progress, WorkerConfig};
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

struct Setup {
    ctx: Arc<Ctx>,
    _blobs: tempfile::TempDir,
}

async fn setup() -> Setup {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    spe::store::migrate(&pool).await.unwrap();
    let blobs = tempfile::tempdir().unwrap();
    let ctx = Ctx {
        pool,
        blobs: spe::store::BlobStore::open(&blobs.path().display().to_string()).unwrap(),
        runtime: spe::inference::Runtime::init(Default::default()).unwrap(),
        max_pixels: 1 << 22,
        retain_batch_pixels: false,
    };
    Setup {
        ctx: Arc::new(ctx),
        _blobs: blobs,
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        count: 1,
        lease: Duration::from_millis(600),
        poll: Duration::from_millis(100),
        max_attempts: 3,
        shutdown_grace: Duration::from_secs(5),
        retry_window: Duration::from_secs(900),
        deadline: None,
    }
}

/// A queued calibration job with no calibration row (the work under test never reads it), claimed.
async fn claimed_job(pool: &PgPool) -> Claimed {
    let mut tx = pool.begin().await.unwrap();
    queue::enqueue(&mut tx, Uuid::new_v4(), JobKind::Calibration, 3)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    claim(pool).await
}

async fn claim(pool: &PgPool) -> Claimed {
    queue::claim(pool, "test", Duration::from_millis(600))
        .await
        .unwrap()
        .expect("a claimable job")
}

#[derive(Debug, sqlx::FromRow)]
struct JobRow {
    state: String,
    error: Option<String>,
    attempts: i32,
    lease_token: Option<Uuid>,
    due_in_s: f64,
}

async fn job(pool: &PgPool, id: Uuid) -> JobRow {
    sqlx::query_as(
        "SELECT state, error, attempts, lease_token, extract(epoch FROM run_after - now())::float8 AS due_in_s
         FROM jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Supervises work that runs until it is told to stop; returns the supervisor's label once it has
/// stopped the work (within 30 s).
async fn supervise_until_stopped(
    ctx: &Arc<Ctx>,
    config: &WorkerConfig,
    job: Claimed,
) -> &'static str {
    let seen = Arc::new(Mutex::new(None));
    let supervised = supervise(ctx, config, job, no_shutdown(), until_stopped(seen.clone()));
    let label = tokio::time::timeout(Duration::from_secs(30), supervised)
        .await
        .expect("the supervisor did not stop the work");
    assert!(seen.lock().unwrap().as_ref().unwrap().stopped());
    label
}

/// Work that runs until it is told to stop, handing its Progress to the test.
fn until_stopped(
    seen: Arc<Mutex<Option<Progress>>>,
) -> impl FnOnce(
    Progress,
)
    -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Output, JobError>> + Send>> {
    move |progress: Progress| {
        *seen.lock().unwrap() = Some(progress.clone());
        Box::pin(async move {
            while !progress.stopped() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(JobError::Pipeline(spe::pipeline::PipelineError::Stopped))
        })
    }
}

fn no_shutdown() -> tokio::sync::watch::Receiver<bool> {
    // The sender is leaked on purpose: a dropped sender would read as a change.
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(tx);
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervise_a_panic_fails_the_job() {
    let s = setup().await;
    let claimed = claimed_job(&s.ctx.pool).await;
    let id = claimed.id;
    let label = supervise(&s.ctx, &config(), claimed, no_shutdown(), |_| async {
        if true {
            panic!("boom");
        }
        Err(JobError::Gone("unreachable".into()))
    })
    .await;
    assert_eq!(label, "failed");
    let row = job(&s.ctx.pool, id).await;
    assert_eq!(row.state, "failed", "{row:?}");
    assert!(row.lease_token.is_none());
    assert!(row.error.unwrap().contains("internal error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervise_transient_failures_retry_until_the_window_is_spent() {
    let s = setup().await;
    let pool = &s.ctx.pool;
    let claimed = claimed_job(pool).await;
    let id = claimed.id;
    let outage = || async {
        Err::<Output, _>(JobError::Store(spe::store::StoreError::MissingBlob(
            "abc".into(),
        )))
    };
    for round in 0..4 {
        let claimed = if round == 0 {
            claimed.clone()
        } else {
            claim(pool).await
        };
        let label = supervise(&s.ctx, &config(), claimed, no_shutdown(), |_| outage()).await;
        assert_eq!(label, "retry");
        let row = job(pool, id).await;
        assert_eq!(row.state, "queued", "{row:?}");
        // Retries do not use up the attempts (they count crashed workers); the backoff grows.
        assert_eq!(row.attempts, 0, "{row:?}");
        let expected = 2f64.powi(round);
        assert!(
            (row.due_in_s - expected).abs() < 0.5,
            "round {round}: due in {} s, expected about {expected}",
            row.due_in_s
        );
        sqlx::query("UPDATE jobs SET run_after = now() WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    }
    // Once the window (from the first failure) is over, the job fails with the reason.
    sqlx::query("UPDATE jobs SET retry_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    let label = supervise(&s.ctx, &config(), claim(pool).await, no_shutdown(), |_| {
        outage()
    })
    .await;
    assert_eq!(label, "failed");
    let row = job(pool, id).await;
    assert_eq!(row.state, "failed");
    assert!(
        row.error
            .as_deref()
            .unwrap()
            .starts_with("gave up after retrying for 900 s"),
        "{row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervise_a_retry_that_meets_an_outage_is_scheduled_once_the_database_is_back() {
    let s = setup().await;
    let pool = s.ctx.pool.clone();
    let claimed = claimed_job(&pool).await;
    let id = claimed.id;
    // The work fails as the database goes away (its jobs table, for 1.5 s: longer than the lease), as
    // an outage during input loading does.
    let label = supervise(
        &s.ctx,
        &config(),
        claimed,
        no_shutdown(),
        move |_| async move {
            sqlx::query("ALTER TABLE jobs RENAME TO jobs_away")
                .execute(&pool)
                .await
                .unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                sqlx::query("ALTER TABLE jobs_away RENAME TO jobs")
                    .execute(&pool)
                    .await
                    .unwrap();
            });
            Err::<Output, _>(JobError::Store(spe::store::StoreError::MissingBlob(
                "abc".into(),
            )))
        },
    )
    .await;
    assert_eq!(label, "retry");
    while sqlx::query_scalar::<_, bool>("SELECT to_regclass('jobs') IS NULL")
        .fetch_one(&s.ctx.pool)
        .await
        .unwrap()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = job(&s.ctx.pool, id).await;
    // Scheduled as a retry, not left to a lapsed lease that would count another attempt.
    assert_eq!(row.state, "queued", "{row:?}");
    assert_eq!(row.attempts, 0, "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_only_after_another_lease_period() {
    let s = setup().await;
    let pool = &s.ctx.pool;
    let held = claimed_job(pool).await;
    let lease = Duration::from_millis(600);
    let expired_for = |secs: f64| {
        sqlx::query(
            "UPDATE jobs SET lease_expires_at = now() - make_interval(secs => $2) WHERE id = $1",
        )
        .bind(held.id)
        .bind(secs)
        .execute(pool)
    };
    // Expired a moment ago, as after a database outage longer than the lease: nobody takes it over,
    // and the holder's heartbeat renews it.
    expired_for(0.3).await.unwrap();
    assert!(queue::claim(pool, "other", lease).await.unwrap().is_none());
    assert!(
        queue::heartbeat(pool, held.id, held.lease_token, lease, 0.5, "computing")
            .await
            .unwrap()
    );
    // Expired for longer than another lease period: its worker is gone, and another one takes over.
    expired_for(0.9).await.unwrap();
    let taken = queue::claim(pool, "other", lease)
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!((taken.id, taken.attempts), (held.id, 2));
    assert!(
        !queue::heartbeat(pool, held.id, held.lease_token, lease, 0.5, "computing")
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervise_a_deadline_stops_the_work_and_fails_the_job() {
    let s = setup().await;
    let claimed = claimed_job(&s.ctx.pool).await;
    let id = claimed.id;
    let config = WorkerConfig {
        deadline: Some(Duration::from_millis(500)),
        ..config()
    };
    let label = supervise_until_stopped(&s.ctx, &config, claimed).await;
    assert_eq!(label, "failed");
    let row = job(&s.ctx.pool, id).await;
    assert_eq!(row.state, "failed");
    assert!(row.error.unwrap().contains("deadline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervise_a_lost_lease_stops_the_work() {
    let s = setup().await;
    let claimed = claimed_job(&s.ctx.pool).await;
    let id = claimed.id;
    let pool = s.ctx.pool.clone();
    // Another worker takes the job over.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        sqlx::query("UPDATE jobs SET lease_token = $2 WHERE id = $1")
            .bind(id)
            .bind(Uuid::new_v4())
            .execute(&pool)
            .await
            .unwrap();
    });
    let label = supervise_until_stopped(&s.ctx, &config(), claimed).await;
    assert_eq!(label, "lost");
    // The new owner's job is untouched.
    assert_eq!(job(&s.ctx.pool, id).await.state, "running");
}

/// Job kind, job state and key role are read as enums: a stored value the code does not know is an
/// error, never taken for another (an unknown kind used to run as a calibration, an unknown state to
/// show as queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_kinds_states_and_roles_refuse_unknown_values() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    async fn read<T>(pool: &PgPool, value: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar("SELECT $1::text")
            .bind(value)
            .fetch_one(pool)
            .await
    }
    assert_eq!(
        read::<JobKind>(&pool, "estimate").await.unwrap(),
        JobKind::Estimate
    );
    assert_eq!(
        read::<JobKind>(&pool, "calibration").await.unwrap(),
        JobKind::Calibration
    );
    assert!(read::<JobKind>(&pool, "retrain").await.is_err());
    use spe::store::JobState;
    for (text, state) in [
        ("queued", JobState::Queued),
        ("running", JobState::Running),
        ("succeeded", JobState::Succeeded),
        ("failed", JobState::Failed),
    ] {
        assert_eq!(read::<JobState>(&pool, text).await.unwrap(), state);
    }
    assert!(read::<JobState>(&pool, "paused").await.is_err());
    use spe::store::keys::Role;
    assert_eq!(
        read::<Role>(&pool, "submitter").await.unwrap(),
        Role::Submitter
    );
    assert!(read::<Role>(&pool, "root").await.is_err());
}
