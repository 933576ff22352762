//! Image sets (reference, calibration, batch, predicted masks): rows name the blobs of each image/label.

use super::StoreError;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    Reference,
    Calibration,
    Batch,
    Masks,
}

impl SetKind {
    fn as_str(self) -> &'static str {
        match self {
            SetKind::Reference => "reference",
            SetKind::Calibration => "calibration",
            SetKind::Batch => "batch",
            SetKind::Masks => "masks",
        }
    }
}

/// One stored item: the blob digests of an image and its label (if labelled).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Item {
    pub name: String,
    pub image_sha256: String,
    pub label_sha256: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SetInfo {
    pub id: Uuid,
    pub kind: String,
    pub labelled: bool,
    pub size: i32,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(
    conn: &mut PgConnection,
    kind: SetKind,
    items: &[Item],
) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    let labelled = items.iter().all(|i| i.label_sha256.is_some());
    sqlx::query("INSERT INTO image_sets (id, kind, labelled, size) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(kind.as_str())
        .bind(labelled)
        .bind(items.len() as i32)
        .execute(&mut *conn)
        .await?;
    // One statement per set: UNNEST keeps it to a single round trip however large the set.
    let positions: Vec<i32> = (0..items.len() as i32).collect();
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    let images: Vec<&str> = items.iter().map(|i| i.image_sha256.as_str()).collect();
    let labels: Vec<Option<&str>> = items.iter().map(|i| i.label_sha256.as_deref()).collect();
    sqlx::query(
        "INSERT INTO image_set_items (set_id, position, name, image_sha256, label_sha256)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[])",
    )
    .bind(id)
    .bind(&positions)
    .bind(&names)
    .bind(&images)
    .bind(&labels)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

pub async fn items(pool: &PgPool, set_id: Uuid) -> Result<Vec<Item>, StoreError> {
    Ok(sqlx::query_as::<_, Item>(
        "SELECT name, image_sha256, label_sha256 FROM image_set_items WHERE set_id = $1 ORDER BY position",
    )
    .bind(set_id)
    .fetch_all(pool)
    .await?)
}

pub async fn info(pool: &PgPool, set_id: Uuid) -> Result<Option<SetInfo>, StoreError> {
    Ok(sqlx::query_as::<_, SetInfo>(
        "SELECT id, kind, labelled, size, created_at FROM image_sets WHERE id = $1",
    )
    .bind(set_id)
    .fetch_optional(pool)
    .await?)
}

/// Deletes the given sets unless a model, calibration, checkpoint or estimate still uses them; returns the
/// blob digests they named (candidates for garbage collection once the transaction commits).
pub async fn delete_unused(
    conn: &mut PgConnection,
    set_ids: &[Uuid],
) -> Result<Vec<String>, StoreError> {
    let shas: Vec<(String, Option<String>)> = sqlx::query_as(
        "WITH gone AS (
             DELETE FROM image_sets s WHERE s.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM models WHERE reference_set_id = s.id)
               AND NOT EXISTS (SELECT 1 FROM calibrations WHERE reference_set_id = s.id OR calibration_set_id = s.id)
               AND NOT EXISTS (SELECT 1 FROM calibration_checkpoints WHERE masks_set_id = s.id)
               AND NOT EXISTS (SELECT 1 FROM estimates WHERE batch_set_id = s.id)
             RETURNING id)
         SELECT i.image_sha256, i.label_sha256 FROM image_set_items i JOIN gone ON i.set_id = gone.id",
    )
    .bind(set_ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(shas
        .into_iter()
        .flat_map(|(a, b)| std::iter::once(a).chain(b))
        .collect())
}
