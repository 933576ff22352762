//! Estimates: the batch, the calibration used and, once computed, the result and timings.

use super::results::{self, EstimateResult, Timings};
use super::{JobState, StoreError};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A batch as posted, or a model's rolling window of recent batch images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EstimateKind {
    Batch,
    Window,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EstimateRow {
    pub id: Uuid,
    pub model_id: Uuid,
    pub kind: EstimateKind,
    pub calibration_id: Uuid,
    pub batch_set_id: Uuid,
    pub images: i32,
    /// Decoded from the raw columns by [`Raw::decode`].
    #[sqlx(skip)]
    pub result: Option<EstimateResult>,
    #[sqlx(skip)]
    pub timings: Option<Timings>,
    pub created_at: DateTime<Utc>,
    pub state: JobState,
    pub progress: f32,
    pub stage: String,
    pub error: Option<String>,
    pub attempts: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub pixels_retained: bool,
}

/// The row as selected: the JSON columns still undecoded.
#[derive(sqlx::FromRow)]
struct Raw {
    #[sqlx(flatten)]
    row: EstimateRow,
    result: Option<serde_json::Value>,
    timings: Option<serde_json::Value>,
}

impl Raw {
    fn decode(self) -> Result<EstimateRow, StoreError> {
        let Raw {
            mut row,
            result,
            timings,
        } = self;
        let id = row.id;
        row.result = result
            .map(|v| results::decode(v, "estimate", id, "result"))
            .transpose()?;
        row.timings = timings
            .map(|v| results::decode(v, "estimate", id, "timings"))
            .transpose()?;
        Ok(row)
    }
}

const SELECT: &str = "SELECT e.id, e.model_id, e.kind, e.calibration_id, e.batch_set_id, s.size AS images, e.result, \
     e.timings, e.created_at, j.state, j.progress, j.stage, j.error, j.attempts, j.started_at, j.finished_at, \
     s.pixels_purged_at IS NULL AS pixels_retained \
     FROM estimates e JOIN jobs j ON j.id = e.id JOIN image_sets s ON s.id = e.batch_set_id";

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    model: Uuid,
    calibration: Uuid,
    batch_set: Uuid,
    kind: EstimateKind,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO estimates (id, model_id, calibration_id, batch_set_id, kind) VALUES ($1, $2, $3, $4, $5)",
    )
        .bind(id)
        .bind(model)
        .bind(calibration)
        .bind(batch_set)
        .bind(kind)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<EstimateRow>, StoreError> {
    sqlx::query_as::<_, Raw>(&format!("{SELECT} WHERE e.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(Raw::decode)
        .transpose()
}

/// A page of a model's estimates, newest first, keyset-paginated on (created_at, id).
pub struct ListQuery {
    pub model: Uuid,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub state: Option<JobState>,
    pub kind: Option<EstimateKind>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, q: &ListQuery) -> Result<Vec<EstimateRow>, StoreError> {
    let sql = format!(
        "{SELECT} WHERE e.model_id = $1
           AND ($2::timestamptz IS NULL OR e.created_at >= $2)
           AND ($3::timestamptz IS NULL OR e.created_at < $3)
           AND ($4::text IS NULL OR j.state = $4)
           AND ($5::timestamptz IS NULL OR (e.created_at, e.id) < ($5, $6))
           AND ($8::text IS NULL OR e.kind = $8)
         ORDER BY e.created_at DESC, e.id DESC LIMIT $7"
    );
    sqlx::query_as::<_, Raw>(&sql)
        .bind(q.model)
        .bind(q.from)
        .bind(q.to)
        .bind(q.state)
        .bind(q.after.map(|a| a.0))
        .bind(q.after.map(|a| a.1))
        .bind(q.limit)
        .bind(q.kind)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(Raw::decode)
        .collect()
}

pub async fn set_result(
    conn: &mut PgConnection,
    id: Uuid,
    result: &EstimateResult,
    timings: &Timings,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE estimates SET result = $2, timings = $3 WHERE id = $1")
        .bind(id)
        .bind(results::to_json(result)?)
        .bind(results::to_json(timings)?)
        .execute(&mut *conn)
        .await?;
    // Results are written in the order jobs finish, so the last one written is the model's latest.
    sqlx::query(
        "INSERT INTO latest_estimates (model_id, estimate_id) SELECT model_id, id FROM estimates WHERE id = $1
         ON CONFLICT (model_id) DO UPDATE SET estimate_id = EXCLUDED.estimate_id",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Per model, its latest succeeded estimate (for the Prometheus gauges): one row per model, kept on
/// write, however many estimates are stored.
pub async fn latest_per_model(pool: &PgPool) -> Result<Vec<(String, EstimateResult)>, StoreError> {
    let rows: Vec<(String, Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT m.name, e.id, e.result FROM latest_estimates l
         JOIN models m ON m.id = l.model_id JOIN estimates e ON e.id = l.estimate_id
         WHERE e.result IS NOT NULL ORDER BY m.name",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(model, id, v)| Ok((model, results::decode(v, "estimate", id, "result")?)))
        .collect()
}

/// Deletes up to `limit` estimates that finished before `cutoff`, never a model's latest, with their jobs,
/// Idempotency-Keys (a replay is then a new request), received-instance records and batch sets. Returns
/// how many, and the blob digests no row names any more (to collect after commit).
pub async fn delete_finished_before(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<(u64, Vec<String>), StoreError> {
    let old: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT e.id, e.batch_set_id FROM estimates e JOIN jobs j ON j.id = e.id
         WHERE j.state IN ('succeeded', 'failed') AND j.finished_at < $1
           AND NOT EXISTS (SELECT 1 FROM latest_estimates l WHERE l.estimate_id = e.id)
         ORDER BY j.finished_at LIMIT $2
         FOR UPDATE OF e SKIP LOCKED",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let (ids, sets): (Vec<Uuid>, Vec<Uuid>) = old.into_iter().unzip();
    for sql in [
        "DELETE FROM idempotency_keys WHERE resource_id = ANY($1)",
        "DELETE FROM received_instances WHERE estimate_id = ANY($1)",
        "DELETE FROM estimates WHERE id = ANY($1)",
        "DELETE FROM jobs WHERE id = ANY($1)",
    ] {
        sqlx::query(sql).bind(&ids).execute(&mut *conn).await?;
    }
    let garbage = super::image_sets::delete_unused(conn, &sets).await?;
    Ok((ids.len() as u64, garbage))
}

/// The batch set of an estimate (None when `id` is not an estimate).
pub async fn batch_set(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT batch_set_id FROM estimates WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Each model's latest succeeded estimate (what its alert state is).
pub async fn latest(pool: &PgPool) -> Result<Vec<EstimateRow>, StoreError> {
    sqlx::query_as::<_, Raw>(&format!(
        "{SELECT} WHERE e.id IN (SELECT estimate_id FROM latest_estimates)"
    ))
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(Raw::decode)
    .collect()
}
