//! Calibrations: how they were requested (source, params, sets, checkpoints) and, once fitted, the result.

use super::results::{self, StoredCalibration};
use super::{JobState, StoreError};
use crate::engine::fit::Calibration;
use crate::engine::spe::SpeParams;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A calibration joined with its job (pair calibrations are fitted synchronously and have no job).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CalibrationRow {
    pub id: Uuid,
    pub model_id: Uuid,
    pub source: String,
    /// Decoded from the raw columns by [`Raw::decode`].
    #[sqlx(skip)]
    pub params: SpeParams,
    pub reference_set_id: Option<Uuid>,
    pub calibration_set_id: Option<Uuid>,
    pub activate: bool,
    #[sqlx(skip)]
    pub result: Option<StoredCalibration>,
    pub created_at: DateTime<Utc>,
    pub active: bool,
    pub state: JobState,
    pub progress: f32,
    pub stage: String,
    pub error: Option<String>,
    pub attempts: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The row as selected: the JSON columns still undecoded.
#[derive(sqlx::FromRow)]
struct Raw {
    #[sqlx(flatten)]
    row: CalibrationRow,
    params: serde_json::Value,
    result: Option<serde_json::Value>,
}

impl Raw {
    fn decode(self) -> Result<CalibrationRow, StoreError> {
        let Raw {
            mut row,
            params,
            result,
        } = self;
        let id = row.id;
        row.params = results::decode(params, "calibration", id, "params")?;
        row.result = result
            .map(|v| results::decode_calibration(v, id))
            .transpose()?;
        Ok(row)
    }
}

const COLUMNS: &str =
    "c.id, c.model_id, c.source, c.params, c.reference_set_id, c.calibration_set_id, c.activate, \
     c.result, c.created_at, (m.active_calibration_id IS NOT DISTINCT FROM c.id) AS active, \
     COALESCE(j.state, 'succeeded') AS state, COALESCE(j.progress, 1) AS progress, \
     COALESCE(j.stage, 'succeeded') AS stage, j.error, COALESCE(j.attempts, 0) AS attempts, \
     CASE WHEN j.id IS NULL THEN c.created_at ELSE j.started_at END AS started_at, \
     CASE WHEN j.id IS NULL THEN c.created_at ELSE j.finished_at END AS finished_at";

pub struct NewCalibration {
    pub id: Uuid,
    pub model_id: Uuid,
    pub source: &'static str,
    pub params: SpeParams,
    pub reference_set_id: Option<Uuid>,
    pub calibration_set_id: Option<Uuid>,
    pub activate: bool,
    /// Present for calibrations fitted synchronously (from pairs).
    pub result: Option<Calibration>,
}

pub async fn insert(conn: &mut PgConnection, new: &NewCalibration) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO calibrations (id, model_id, source, params, reference_set_id, calibration_set_id, activate, result)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new.id)
    .bind(new.model_id)
    .bind(new.source)
    .bind(results::to_json(&new.params)?)
    .bind(new.reference_set_id)
    .bind(new.calibration_set_id)
    .bind(new.activate)
    .bind(new.result.as_ref().map(results::to_json).transpose()?)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CheckpointRow {
    pub name: String,
    pub onnx_sha256: Option<String>,
    pub masks_set_id: Option<Uuid>,
}

pub async fn insert_checkpoint(
    conn: &mut PgConnection,
    calibration: Uuid,
    position: i32,
    row: &CheckpointRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO calibration_checkpoints (calibration_id, position, name, onnx_sha256, masks_set_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(calibration)
    .bind(position)
    .bind(&row.name)
    .bind(&row.onnx_sha256)
    .bind(row.masks_set_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn checkpoints(
    pool: &PgPool,
    calibration: Uuid,
) -> Result<Vec<CheckpointRow>, StoreError> {
    Ok(sqlx::query_as::<_, CheckpointRow>(
        "SELECT name, onnx_sha256, masks_set_id FROM calibration_checkpoints WHERE calibration_id = $1 ORDER BY position",
    )
    .bind(calibration)
    .fetch_all(pool)
    .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<CalibrationRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM calibrations c JOIN models m ON m.id = c.model_id LEFT JOIN jobs j ON j.id = c.id
         WHERE c.id = $1"
    );
    sqlx::query_as::<_, Raw>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(Raw::decode)
        .transpose()
}

pub async fn list(pool: &PgPool, model: Uuid) -> Result<Vec<CalibrationRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM calibrations c JOIN models m ON m.id = c.model_id LEFT JOIN jobs j ON j.id = c.id
         WHERE c.model_id = $1 ORDER BY c.created_at DESC, c.id DESC"
    );
    sqlx::query_as::<_, Raw>(&sql)
        .bind(model)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(Raw::decode)
        .collect()
}

/// Stores a fitted calibration and, when it was submitted with `activate`, makes it the model's active
/// one, unless the active choice was requested later than this calibration was submitted (a manual
/// activation meanwhile, or a newer calibration that finished first): the latest request wins.
pub async fn set_result(
    conn: &mut PgConnection,
    id: Uuid,
    result: &Calibration,
) -> Result<(), StoreError> {
    let (model, activate, submitted): (Uuid, bool, DateTime<Utc>) = sqlx::query_as(
        "UPDATE calibrations SET result = $2 WHERE id = $1 RETURNING model_id, activate, created_at",
    )
    .bind(id)
    .bind(results::to_json(result)?)
    .fetch_one(&mut *conn)
    .await?;
    if activate {
        sqlx::query(
            "UPDATE models SET active_calibration_id = $2, active_requested_at = $3
             WHERE id = $1 AND (active_requested_at IS NULL OR active_requested_at <= $3)",
        )
        .bind(model)
        .bind(id)
        .bind(submitted)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Makes `id` the model's active calibration now (an admin's choice, or a pair calibration with
/// `activate`).
pub async fn activate_for(
    conn: &mut PgConnection,
    model: Uuid,
    id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE models SET active_calibration_id = $2, active_requested_at = clock_timestamp() WHERE id = $1",
    )
    .bind(model)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}
