//! Registered segmentation models and reverse segmenters.

use super::{image_sets, StoreError};
use crate::monitor::Thresholds;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ModelRow {
    pub id: Uuid,
    pub name: String,
    pub spec: serde_json::Value,
    pub onnx_sha256: String,
    pub onnx_size: i64,
    pub reverse_segmenter_id: Option<Uuid>,
    /// The ONNX reverse segmenter's digest and threshold; both None for label fusion.
    pub reverse_sha256: Option<String>,
    pub onnx_threshold: Option<f32>,
    pub reference_set_id: Option<Uuid>,
    pub reference_size: Option<i32>,
    pub active_calibration_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

// A row written by a replica of the previous release has no `onnx_threshold`: its `reverse_threshold`
// holds the same value (migration 0008).
const MODEL_COLUMNS: &str = "m.id, m.name, m.spec, m.onnx_sha256, m.onnx_size, m.reverse_segmenter_id, \
     r.onnx_sha256 AS reverse_sha256, \
     CASE WHEN m.reverse_segmenter_id IS NOT NULL THEN COALESCE(m.onnx_threshold, m.reverse_threshold) END \
     AS onnx_threshold, \
     m.reference_set_id, s.size AS reference_size, m.active_calibration_id, m.created_at";

const MODEL_FROM: &str = "models m LEFT JOIN image_sets s ON s.id = m.reference_set_id \
     LEFT JOIN reverse_segmenters r ON r.id = m.reverse_segmenter_id";

pub struct NewModel<'a> {
    pub name: &'a str,
    pub spec: serde_json::Value,
    pub onnx_sha256: &'a str,
    pub onnx_size: i64,
    pub reverse_segmenter_id: Option<Uuid>,
    /// Some exactly when `reverse_segmenter_id` is.
    pub onnx_threshold: Option<f32>,
}

pub async fn insert(conn: &mut PgConnection, new: NewModel<'_>) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    // `reverse_threshold` is read only by replicas of the previous release (see migration 0008): the
    // ONNX threshold, or for label fusion the column's own default, which nothing reads.
    sqlx::query(
        "INSERT INTO models (id, name, spec, onnx_sha256, onnx_size, reverse_segmenter_id, onnx_threshold,
                             reverse_threshold)
         VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($7, 0.4))",
    )
    .bind(id)
    .bind(new.name)
    .bind(new.spec)
    .bind(new.onnx_sha256)
    .bind(new.onnx_size)
    .bind(new.reverse_segmenter_id)
    .bind(new.onnx_threshold)
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ModelRow>, StoreError> {
    let sql = format!("SELECT {MODEL_COLUMNS} FROM {MODEL_FROM} WHERE m.id = $1");
    Ok(sqlx::query_as::<_, ModelRow>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// The model's alert thresholds: None when the model does not exist, empty when none are set.
pub async fn thresholds(pool: &PgPool, id: Uuid) -> Result<Option<Thresholds>, StoreError> {
    let row: Option<Option<serde_json::Value>> =
        sqlx::query_scalar("SELECT thresholds FROM models WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    row.map(|v| match v {
        Some(v) => super::results::decode(v, "model", id, "thresholds"),
        None => Ok(Thresholds::new()),
    })
    .transpose()
}

/// Replaces the model's thresholds (empty: none); false when the model does not exist.
pub async fn set_thresholds(
    pool: &PgPool,
    id: Uuid,
    thresholds: &Thresholds,
) -> Result<bool, StoreError> {
    let stored = (!thresholds.is_empty())
        .then(|| super::results::to_json(thresholds))
        .transpose()?;
    let done = sqlx::query("UPDATE models SET thresholds = $2 WHERE id = $1")
        .bind(id)
        .bind(stored)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list(pool: &PgPool) -> Result<Vec<ModelRow>, StoreError> {
    let sql = format!("SELECT {MODEL_COLUMNS} FROM {MODEL_FROM} ORDER BY m.created_at, m.id");
    Ok(sqlx::query_as::<_, ModelRow>(&sql).fetch_all(pool).await?)
}

/// Points the model at a new reference set; returns the previous set's id (to delete if unused).
pub async fn set_reference(
    conn: &mut PgConnection,
    model: Uuid,
    set: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let previous: Option<Option<Uuid>> =
        sqlx::query_scalar("SELECT reference_set_id FROM models WHERE id = $1 FOR UPDATE")
            .bind(model)
            .fetch_optional(&mut *conn)
            .await?;
    sqlx::query("UPDATE models SET reference_set_id = $2 WHERE id = $1")
        .bind(model)
        .bind(set)
        .execute(&mut *conn)
        .await?;
    Ok(previous.flatten())
}

/// Deletes a model with its calibrations, estimates, their jobs and now-unused image sets. Returns None when
/// the model does not exist, else the blob digests that may have become garbage.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<Option<Vec<String>>, StoreError> {
    let onnx: Option<String> =
        sqlx::query_scalar("SELECT onnx_sha256 FROM models WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(onnx) = onnx else {
        return Ok(None);
    };
    let sets: Vec<Uuid> = sqlx::query_scalar(
        "SELECT reference_set_id FROM models WHERE id = $1 AND reference_set_id IS NOT NULL
         UNION SELECT reference_set_id FROM calibrations WHERE model_id = $1 AND reference_set_id IS NOT NULL
         UNION SELECT calibration_set_id FROM calibrations WHERE model_id = $1 AND calibration_set_id IS NOT NULL
         UNION SELECT k.masks_set_id FROM calibration_checkpoints k JOIN calibrations c ON c.id = k.calibration_id
               WHERE c.model_id = $1 AND k.masks_set_id IS NOT NULL
         UNION SELECT batch_set_id FROM estimates WHERE model_id = $1",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut garbage: Vec<String> = sqlx::query_scalar(
        "SELECT k.onnx_sha256 FROM calibration_checkpoints k JOIN calibrations c ON c.id = k.calibration_id
         WHERE c.model_id = $1 AND k.onnx_sha256 IS NOT NULL",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    garbage.push(onnx);
    sqlx::query(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM calibrations WHERE model_id = $1
                                       UNION SELECT id FROM estimates WHERE model_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM models WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    garbage.extend(image_sets::delete_unused(conn, &sets).await?);
    Ok(Some(garbage))
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReverseRow {
    pub id: Uuid,
    pub name: String,
    pub onnx_sha256: String,
    pub onnx_size: i64,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_reverse(
    conn: &mut PgConnection,
    name: &str,
    sha: &str,
    size: i64,
) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO reverse_segmenters (id, name, onnx_sha256, onnx_size) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(name)
    .bind(sha)
    .bind(size)
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn get_reverse(pool: &PgPool, id: Uuid) -> Result<Option<ReverseRow>, StoreError> {
    Ok(sqlx::query_as::<_, ReverseRow>(
        "SELECT id, name, onnx_sha256, onnx_size, created_at FROM reverse_segmenters WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn list_reverse(pool: &PgPool) -> Result<Vec<ReverseRow>, StoreError> {
    Ok(sqlx::query_as::<_, ReverseRow>(
        "SELECT id, name, onnx_sha256, onnx_size, created_at FROM reverse_segmenters ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?)
}
