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

/// One stored item: the blob digests of an image and its label (if labelled), and where it came from.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct Item {
    pub name: String,
    pub image_sha256: String,
    pub label_sha256: Option<String>,
    /// Digest of the uploaded file the image was taken from (a DICOM instance, a NIfTI volume, a PNG).
    pub source_sha256: Option<String>,
    pub source_format: Option<String>,
    /// Frame or slice number within the source.
    pub source_index: Option<i32>,
    /// Size of a working-grid (SIDE x SIDE) pixel in mm, [row, column], when the source says.
    pub pixel_row_mm: Option<f64>,
    pub pixel_col_mm: Option<f64>,
}

/// Items as one array per column, for inserts that send a whole set in one UNNEST statement.
pub(crate) struct Columns<'a> {
    pub names: Vec<&'a str>,
    pub images: Vec<&'a str>,
    pub labels: Vec<Option<&'a str>>,
    pub sources: Vec<Option<&'a str>>,
    pub formats: Vec<Option<&'a str>>,
    pub indices: Vec<Option<i32>>,
    pub rows_mm: Vec<Option<f64>>,
    pub cols_mm: Vec<Option<f64>>,
}

impl<'a> Columns<'a> {
    pub fn of(items: &'a [Item]) -> Self {
        Columns {
            names: items.iter().map(|i| i.name.as_str()).collect(),
            images: items.iter().map(|i| i.image_sha256.as_str()).collect(),
            labels: items.iter().map(|i| i.label_sha256.as_deref()).collect(),
            sources: items.iter().map(|i| i.source_sha256.as_deref()).collect(),
            formats: items.iter().map(|i| i.source_format.as_deref()).collect(),
            indices: items.iter().map(|i| i.source_index).collect(),
            rows_mm: items.iter().map(|i| i.pixel_row_mm).collect(),
            cols_mm: items.iter().map(|i| i.pixel_col_mm).collect(),
        }
    }
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
    let c = Columns::of(items);
    sqlx::query(
        "INSERT INTO image_set_items (set_id, position, name, image_sha256, label_sha256, source_sha256,
                                      source_format, source_index, pixel_row_mm, pixel_col_mm)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                  $8::int[], $9::float8[], $10::float8[])",
    )
    .bind(id)
    .bind(&positions)
    .bind(&c.names)
    .bind(&c.images)
    .bind(&c.labels)
    .bind(&c.sources)
    .bind(&c.formats)
    .bind(&c.indices)
    .bind(&c.rows_mm)
    .bind(&c.cols_mm)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

pub async fn items(pool: &PgPool, set_id: Uuid) -> Result<Vec<Item>, StoreError> {
    Ok(sqlx::query_as::<_, Item>(
        "SELECT name, image_sha256, label_sha256, source_sha256, source_format, source_index, pixel_row_mm,
                pixel_col_mm
         FROM image_set_items WHERE set_id = $1 ORDER BY position",
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
    Ok(digests(shas))
}

/// Marks a set's pixels as gone (its rows, and so its digests, stay); returns the blob digests it named,
/// to be garbage-collected once the transaction commits. A set already purged returns nothing.
pub async fn purge_pixels(
    conn: &mut PgConnection,
    set_id: Uuid,
) -> Result<Vec<String>, StoreError> {
    let shas: Vec<(String, Option<String>)> = sqlx::query_as(
        "WITH purged AS (
             UPDATE image_sets SET pixels_purged_at = now()
             WHERE id = $1 AND pixels_purged_at IS NULL RETURNING id)
         SELECT i.image_sha256, i.label_sha256 FROM image_set_items i JOIN purged ON i.set_id = purged.id",
    )
    .bind(set_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(digests(shas))
}

/// The image and label digests of item rows, as one list.
fn digests(rows: Vec<(String, Option<String>)>) -> Vec<String> {
    rows.into_iter()
        .flat_map(|(image, label)| std::iter::once(image).chain(label))
        .collect()
}

/// The distinct source files of a set, in upload order: (digest, format, images taken from it).
pub async fn sources(
    pool: &PgPool,
    set_id: Uuid,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(source_sha256, image_sha256) AS sha, COALESCE(source_format, 'image') AS format,
                count(*) AS images
         FROM image_set_items WHERE set_id = $1
         GROUP BY 1, 2 ORDER BY min(position)",
    )
    .bind(set_id)
    .fetch_all(pool)
    .await?)
}
