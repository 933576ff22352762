//! Rolling windows: a model's latest N batch images, kept (with their blobs) until they leave the window.
//! Every change happens under the model row's lock, so concurrent batches are added one after the other:
//! none is lost, none counted twice.

use super::image_sets::{Columns, Item};
use super::StoreError;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A model's window setting and state.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct WindowState {
    /// Images per window estimate; None: no window.
    pub images: Option<i32>,
    /// Images added since the last window estimate.
    pub pending: i32,
    /// Images held now (at most `images`).
    pub held: i64,
}

pub async fn state(pool: &PgPool, model: Uuid) -> Result<Option<WindowState>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT window_images AS images, window_pending AS pending,
                (SELECT count(*) FROM window_images w WHERE w.model_id = m.id) AS held
         FROM models m WHERE id = $1",
    )
    .bind(model)
    .fetch_optional(pool)
    .await?)
}

/// Sets (or with None, removes) the window size; images beyond the new size leave the window. Returns
/// the blob digests that left (garbage candidates once committed), or None when the model does not exist.
pub async fn set_size(
    conn: &mut PgConnection,
    model: Uuid,
    images: Option<i32>,
) -> Result<Option<Vec<String>>, StoreError> {
    let found = sqlx::query(
        "UPDATE models SET window_images = $2,
                window_pending = CASE WHEN $2 IS NULL THEN 0 ELSE window_pending END
         WHERE id = $1",
    )
    .bind(model)
    .bind(images)
    .execute(&mut *conn)
    .await?;
    if found.rows_affected() == 0 {
        return Ok(None);
    }
    Ok(Some(trim(conn, model, images.unwrap_or(0)).await?))
}

/// What adding a batch to a model's window did.
#[derive(Debug, Default)]
pub struct Added {
    /// The window's images, oldest first, when this batch completed a window: estimate them.
    pub due: Option<Vec<Item>>,
    /// Blob digests of images that left the window (garbage candidates once committed).
    pub left: Vec<String>,
}

/// Adds a batch's images to the model's window, if it has one (locking the model row until commit).
/// The lock is `FOR NO KEY UPDATE`: concurrent batches queue behind it, but it does not conflict with
/// the `KEY SHARE` locks that their earlier inserts' foreign keys already hold on the same row, which
/// `FOR UPDATE` does (two such batches deadlocked).
pub async fn add(
    conn: &mut PgConnection,
    model: Uuid,
    items: &[Item],
) -> Result<Added, StoreError> {
    let size: Option<Option<i32>> =
        sqlx::query_scalar("SELECT window_images FROM models WHERE id = $1 FOR NO KEY UPDATE")
            .bind(model)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(Some(size)) = size else {
        return Ok(Added::default());
    };
    let c = Columns::of(items);
    // WITH ORDINALITY keeps the batch's order in seq.
    sqlx::query(
        "INSERT INTO window_images (model_id, name, image_sha256, source_sha256, source_format, source_index,
                                    pixel_row_mm, pixel_col_mm)
         SELECT $1, n, i, s, f, x, r, c FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                                                  $7::float8[], $8::float8[])
                WITH ORDINALITY AS t(n, i, s, f, x, r, c, o) ORDER BY o",
    )
    .bind(model)
    .bind(&c.names)
    .bind(&c.images)
    .bind(&c.sources)
    .bind(&c.formats)
    .bind(&c.indices)
    .bind(&c.rows_mm)
    .bind(&c.cols_mm)
    .execute(&mut *conn)
    .await?;
    let pending: i32 = sqlx::query_scalar(
        "UPDATE models SET window_pending = window_pending + $2 WHERE id = $1 RETURNING window_pending",
    )
    .bind(model)
    .bind(items.len() as i32)
    .fetch_one(&mut *conn)
    .await?;
    let left = trim(conn, model, size).await?;
    let due = if pending >= size {
        sqlx::query("UPDATE models SET window_pending = 0 WHERE id = $1")
            .bind(model)
            .execute(&mut *conn)
            .await?;
        Some(
            sqlx::query_as::<_, Item>(
                "SELECT name, image_sha256, NULL AS label_sha256, source_sha256, source_format, source_index,
                        pixel_row_mm, pixel_col_mm
                 FROM window_images WHERE model_id = $1 ORDER BY seq",
            )
            .bind(model)
            .fetch_all(&mut *conn)
            .await?,
        )
    } else {
        None
    };
    Ok(Added { due, left })
}

/// Keeps the model's newest `keep` window images; returns the digests of those removed.
async fn trim(conn: &mut PgConnection, model: Uuid, keep: i32) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "DELETE FROM window_images w WHERE w.model_id = $1 AND w.seq NOT IN (
             SELECT seq FROM window_images WHERE model_id = $1 ORDER BY seq DESC LIMIT $2)
         RETURNING w.image_sha256",
    )
    .bind(model)
    .bind(i64::from(keep))
    .fetch_all(conn)
    .await?)
}
