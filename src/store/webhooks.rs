//! Webhook receivers and their deliveries. A delivery is claimed like a job (a lease, so a process that
//! dies mid-request loses it to another after the lease) and retried with exponential backoff until it
//! succeeds or its retry period is over.

use super::StoreError;
use crate::webhooks::Event;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// A receiver as the API shows it: never its secret.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn create(
    pool: &PgPool,
    id: Uuid,
    url: &str,
    secret: &str,
    events: &[Event],
) -> Result<WebhookRow, StoreError> {
    let events: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    Ok(sqlx::query_as(
        "INSERT INTO webhooks (id, url, secret, events) VALUES ($1, $2, $3, $4)
         RETURNING id, url, events, created_at",
    )
    .bind(id)
    .bind(url)
    .bind(secret)
    .bind(&events)
    .fetch_one(pool)
    .await?)
}

pub async fn list(pool: &PgPool) -> Result<Vec<WebhookRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT id, url, events, created_at FROM webhooks ORDER BY created_at, id")
            .fetch_all(pool)
            .await?,
    )
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<WebhookRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT id, url, events, created_at FROM webhooks WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Removes the receiver and its deliveries (pending ones are never sent); false when it did not exist.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The receivers subscribed to `event`.
pub async fn subscribers(conn: &mut PgConnection, event: Event) -> Result<Vec<Uuid>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM webhooks WHERE $1 = ANY(events) ORDER BY id")
            .bind(event.as_str())
            .fetch_all(conn)
            .await?,
    )
}

/// Queues one delivery; a second one for the same (receiver, event, estimate) is ignored, so an estimate
/// finished twice (it cannot be, but a retried transaction could try) still notifies once.
pub async fn enqueue(
    conn: &mut PgConnection,
    id: Uuid,
    webhook: Uuid,
    event: Event,
    estimate: Uuid,
    body: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event, estimate_id, body, state)
         VALUES ($1, $2, $3, $4, $5, 'pending') ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING",
    )
    .bind(id)
    .bind(webhook)
    .bind(event.as_str())
    .bind(estimate)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivery as the API lists it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub event: String,
    pub estimate_id: Uuid,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The receiver's deliveries, newest first.
pub async fn deliveries(
    pool: &PgPool,
    webhook: Uuid,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, event, estimate_id, state, attempts, last_status, last_error, created_at,
                CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at, delivered_at
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(webhook)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A claimed delivery: what to send, where, and the key to sign it with.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event: String,
    pub body: String,
    pub attempts: i32,
    pub url: String,
    pub secret: String,
}

/// Claims the delivery due first (pending, due, not leased by a live attempt) for `lease`.
pub async fn claim(pool: &PgPool, lease: Duration) -> Result<Option<Claimed>, StoreError> {
    Ok(sqlx::query_as(
        "WITH next AS (
             SELECT id FROM webhook_deliveries
             WHERE state = 'pending' AND next_attempt_at <= now()
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             ORDER BY next_attempt_at
             FOR UPDATE SKIP LOCKED
             LIMIT 1)
         UPDATE webhook_deliveries d SET attempts = d.attempts + 1,
                lease_expires_at = now() + make_interval(secs => $1)
         FROM next, webhooks w
         WHERE d.id = next.id AND w.id = d.webhook_id
         RETURNING d.id, d.webhook_id, d.event, d.body, d.attempts, w.url, w.secret",
    )
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?)
}

pub async fn delivered(pool: &PgPool, id: Uuid, status: u16) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), last_status = $2,
                last_error = NULL, lease_expires_at = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(i32::from(status))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed attempt: due again after 1 s doubling per attempt (at most `max_delay`), or failed
/// for good once `give_up_after` has passed since the event (or when `permanent`).
pub async fn attempt_failed(
    pool: &PgPool,
    id: Uuid,
    status: Option<u16>,
    error: &str,
    permanent: bool,
    max_delay: Duration,
    give_up_after: Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET lease_expires_at = NULL, last_status = $2, last_error = $3,
                next_attempt_at = now() + make_interval(secs => LEAST($5, power(2, LEAST(attempts - 1, 30)))),
                state = CASE WHEN $4 OR created_at + make_interval(secs => $6) < now() THEN 'failed'
                             ELSE 'pending' END
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.map(i32::from))
    .bind(error.replace('\0', "\u{FFFD}"))
    .bind(permanent)
    .bind(max_delay.as_secs_f64())
    .bind(give_up_after.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// The model of an estimate, or None when `id` is not an estimate (a calibration job).
pub async fn estimate_model(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(Uuid, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT m.id, m.name FROM estimates e JOIN models m ON m.id = e.model_id WHERE e.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The latest deliveries about a model's estimates, across receivers, newest first.
pub async fn for_model(
    pool: &PgPool,
    model: Uuid,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT d.id, d.event, d.estimate_id, d.state, d.attempts, d.last_status, d.last_error, d.created_at,
                CASE WHEN d.state = 'pending' THEN d.next_attempt_at END AS next_attempt_at, d.delivered_at
         FROM webhook_deliveries d JOIN estimates e ON e.id = d.estimate_id
         WHERE e.model_id = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT $2",
    )
    .bind(model)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
