//! DICOM instances a model has already received (by SOP Instance UID digest), with the estimate they
//! went into, so that a resent instance is not stored twice.

use super::blobs::sha256_hex;
use super::StoreError;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

fn digest(uid: &str) -> String {
    sha256_hex(uid.as_bytes())
}

/// Of `uids`, those the model has received before, with the estimate each went into.
pub async fn known(
    pool: &PgPool,
    model_id: Uuid,
    uids: &[String],
) -> Result<HashMap<String, Uuid>, StoreError> {
    let digests: Vec<String> = uids.iter().map(|u| digest(u)).collect();
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT sop_instance_sha256, estimate_id FROM received_instances
         WHERE model_id = $1 AND sop_instance_sha256 = ANY($2)",
    )
    .bind(model_id)
    .bind(&digests)
    .fetch_all(pool)
    .await?;
    let by_digest: HashMap<String, Uuid> = rows.into_iter().collect();
    Ok(uids
        .iter()
        .zip(&digests)
        .filter_map(|(uid, d)| by_digest.get(d).map(|e| (uid.clone(), *e)))
        .collect())
}

/// Records the instances of a new estimate (in its transaction). An instance a concurrent request
/// recorded first keeps that request's estimate.
pub async fn record(
    conn: &mut PgConnection,
    model_id: Uuid,
    estimate_id: Uuid,
    uids: &[String],
) -> Result<(), StoreError> {
    let digests: Vec<String> = uids.iter().map(|u| digest(u)).collect();
    sqlx::query(
        "INSERT INTO received_instances (model_id, sop_instance_sha256, estimate_id)
         SELECT $1, d, $2 FROM unnest($3::text[]) d ON CONFLICT DO NOTHING",
    )
    .bind(model_id)
    .bind(estimate_id)
    .bind(&digests)
    .execute(conn)
    .await?;
    Ok(())
}
