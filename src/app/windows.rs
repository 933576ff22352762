//! Rolling windows for integrations that post small batches (see [`crate::store::windows`]).

use super::{existing, AppError, Context};
use crate::store::windows::{self, WindowState};
use uuid::Uuid;

/// Largest window: one window estimate decodes and segments every image in it.
pub const MAX_WINDOW_IMAGES: i32 = 1024;

pub async fn get(ctx: &Context, model: Uuid) -> Result<WindowState, AppError> {
    existing(windows::state(&ctx.pool, model).await?, "model", model)
}

/// Sets the window size (None removes the window and frees its images).
pub async fn set(ctx: &Context, model: Uuid, images: Option<i32>) -> Result<WindowState, AppError> {
    if let Some(n) = images {
        let most = MAX_WINDOW_IMAGES.min(ctx.limits.max_images as i32);
        if !(1..=most).contains(&n) {
            return Err(AppError::InvalidInput(format!(
                "\"images\" must be between 1 and {most} (the most images one estimate takes), got {n}; \
                 null removes the window"
            )));
        }
    }
    let mut tx = ctx
        .pool
        .begin()
        .await
        .map_err(crate::store::StoreError::from)?;
    let left = windows::set_size(&mut tx, model, images).await?;
    let left = existing(left, "model", model)?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    super::collect_left(ctx, &left).await;
    get(ctx, model).await
}
