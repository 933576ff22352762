//! The Postgres job queue. Claiming uses `FOR UPDATE SKIP LOCKED`; a claim is a lease (token + expiry)
//! kept alive by heartbeats. A job whose lease expired (its worker died) is claimable again. Only the
//! current lease holder can finish a job, in the same transaction as its result, so a job has one result.

use crate::store::{JobState, StoreError};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

pub const CHANNEL: &str = "spe_jobs";

/// What a job computes, as the jobs table stores it; an unknown kind is a decode error (never run as
/// another kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobKind {
    Calibration,
    Estimate,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Calibration => "calibration",
            JobKind::Estimate => "estimate",
        }
    }
}

pub async fn enqueue(
    conn: &mut PgConnection,
    id: Uuid,
    kind: JobKind,
    max_attempts: i32,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO jobs (id, kind, state, max_attempts) VALUES ($1, $2, 'queued', $3)")
        .bind(id)
        .bind(kind)
        .bind(max_attempts)
        .execute(&mut *conn)
        .await?;
    // Delivered on commit: wakes idle workers without waiting for their next poll.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// Jobs waiting or running (what the queue-depth limit counts).
pub async fn depth(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
            .fetch_one(pool)
            .await?,
    )
}

/// Jobs queued and running per kind (zero counts included), for the queue-depth gauge.
pub async fn depth_by_kind(pool: &PgPool) -> Result<Vec<(JobKind, JobState, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT k.kind, s.state, count(j.id) FROM (VALUES ('calibration'), ('estimate')) k(kind)
         CROSS JOIN (VALUES ('queued'), ('running')) s(state)
         LEFT JOIN jobs j ON j.kind = k.kind AND j.state = s.state GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await?)
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub kind: JobKind,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_token: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Claims the oldest runnable job: queued and due, or running with a lease expired for another lease
/// period (its worker is gone). The extra period is for database outages longer than the lease: when the
/// database is back, the holder's heartbeat (every lease/3) renews first, and the job is not run twice.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
) -> Result<Option<Claimed>, StoreError> {
    Ok(sqlx::query_as::<_, Claimed>(
        "WITH next AS (
             SELECT id FROM jobs
             WHERE (state = 'queued' AND run_after <= now())
                OR (state = 'running' AND lease_expires_at < now() - make_interval(secs => $2))
             ORDER BY created_at
             FOR UPDATE SKIP LOCKED
             LIMIT 1)
         UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, lease_token = $1,
                lease_expires_at = now() + make_interval(secs => $2), worker = $3,
                started_at = COALESCE(j.started_at, now()), stage = 'starting'
         FROM next WHERE j.id = next.id
         RETURNING j.id, j.kind, j.attempts, j.max_attempts, j.lease_token AS lease_token, j.created_at",
    )
    .bind(Uuid::new_v4())
    .bind(lease.as_secs_f64())
    .bind(worker)
    .fetch_optional(pool)
    .await?)
}

/// Extends the lease and records progress; false when the lease was lost (expired and taken over).
pub async fn heartbeat(
    pool: &PgPool,
    id: Uuid,
    token: Uuid,
    lease: Duration,
    progress: f32,
    stage: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3), progress = $4, stage = $5
         WHERE id = $1 AND lease_token = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(token)
    .bind(lease.as_secs_f64())
    .bind(progress)
    .bind(stage)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the job finished (succeeded or failed) if this worker still holds its lease. Call inside the
/// transaction that writes the result: when it returns false, roll back.
pub async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    succeeded: bool,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET state = $3, error = $4, finished_at = now(), lease_token = NULL, lease_expires_at = NULL,
                progress = CASE WHEN $3 = 'succeeded' THEN 1 ELSE progress END, stage = $3
         WHERE id = $1 AND lease_token = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(token)
    .bind(if succeeded {
        JobState::Succeeded
    } else {
        JobState::Failed
    })
    // PostgreSQL text cannot hold NUL; an error quoting one must still be recorded.
    .bind(error.map(|e| e.replace('\0', "\u{FFFD}")))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts the job back in the queue after a transient failure (or at shutdown, with `refund` so the
/// interrupted attempt does not count against the retry limit).
pub async fn requeue(
    pool: &PgPool,
    id: Uuid,
    token: Uuid,
    delay: Duration,
    error: Option<&str>,
    refund: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET state = 'queued', lease_token = NULL, lease_expires_at = NULL, worker = NULL,
                run_after = now() + make_interval(secs => $3), error = COALESCE($4, error), stage = 'queued',
                attempts = attempts - CASE WHEN $5 THEN 1 ELSE 0 END
         WHERE id = $1 AND lease_token = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(token)
    .bind(delay.as_secs_f64())
    .bind(error)
    .bind(refund)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What became of a transient failure.
#[derive(Debug, PartialEq)]
pub enum Retry {
    /// Back in the queue, due after this many seconds.
    Scheduled(f64),
    /// The retry window, counted from the first transient failure, is over.
    WindowSpent,
    /// Another worker owns the job now.
    LeaseLost,
}

/// Puts the job back in the queue after a transient failure, with exponential backoff (1 s doubling,
/// at most 60 s), while its retry window lasts. The attempt is refunded: attempts count crashes.
pub async fn retry_later(
    pool: &PgPool,
    id: Uuid,
    token: Uuid,
    window: Duration,
    error: &str,
) -> Result<Retry, StoreError> {
    let delay: Option<f64> = sqlx::query_scalar(
        "UPDATE jobs SET state = 'queued', lease_token = NULL, lease_expires_at = NULL, worker = NULL,
                retry_until = COALESCE(retry_until, now() + make_interval(secs => $3)),
                run_after = now() + make_interval(secs => LEAST(60, power(2, LEAST(transient_failures, 6)))),
                transient_failures = transient_failures + 1, error = $4, stage = 'queued',
                attempts = attempts - 1
         WHERE id = $1 AND lease_token = $2 AND state = 'running'
           AND (retry_until IS NULL OR retry_until > now())
         RETURNING extract(epoch FROM run_after - now())::float8",
    )
    .bind(id)
    .bind(token)
    .bind(window.as_secs_f64())
    .bind(error)
    .fetch_optional(pool)
    .await?;
    if let Some(delay) = delay {
        return Ok(Retry::Scheduled(delay));
    }
    let held: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'running')",
    )
    .bind(id)
    .bind(token)
    .fetch_one(pool)
    .await?;
    Ok(if held {
        Retry::WindowSpent
    } else {
        Retry::LeaseLost
    })
}
