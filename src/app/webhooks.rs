//! Webhook receivers: registered by admins, checked before they are stored (see [`crate::webhooks`]).

use super::{existing, AppError, Context};
use crate::store::webhooks::{self as store, DeliveryRow, WebhookRow};
use crate::webhooks::{Event, MAX_SECRET_CHARS, MIN_SECRET_CHARS};
use uuid::Uuid;

/// A receiver as submitted (already parsed from JSON).
pub struct NewWebhook {
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
}

pub async fn create(ctx: &Context, new: NewWebhook) -> Result<WebhookRow, AppError> {
    let invalid = AppError::InvalidInput;
    let url = ctx.webhook_hosts.check(&new.url).map_err(invalid)?;
    let chars = new.secret.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&chars) {
        return Err(invalid(format!(
            "\"secret\" must have {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters, got {chars}; \
             e.g. `openssl rand -hex 32`"
        )));
    }
    if new.events.is_empty() {
        return Err(invalid(format!(
            "\"events\" must name at least one of {}",
            known_events()
        )));
    }
    let mut events = Vec::new();
    for name in &new.events {
        let event = Event::parse(name).ok_or_else(|| {
            invalid(format!(
                "unknown event {name:?}; known events: {}",
                known_events()
            ))
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(store::create(
        &ctx.pool,
        Uuid::new_v4(),
        url.as_str(),
        &new.secret,
        &events,
    )
    .await?)
}

fn known_events() -> String {
    Event::ALL.map(Event::as_str).join(", ")
}

pub async fn list(ctx: &Context) -> Result<Vec<WebhookRow>, AppError> {
    Ok(store::list(&ctx.pool).await?)
}

pub async fn get(ctx: &Context, id: Uuid) -> Result<WebhookRow, AppError> {
    existing(store::get(&ctx.pool, id).await?, "webhook", id)
}

pub async fn delete(ctx: &Context, id: Uuid) -> Result<(), AppError> {
    existing(
        store::delete(&ctx.pool, id).await?.then_some(()),
        "webhook",
        id,
    )
}

/// The receiver's latest deliveries, newest first.
pub async fn deliveries(ctx: &Context, id: Uuid, limit: i64) -> Result<Vec<DeliveryRow>, AppError> {
    get(ctx, id).await?;
    Ok(store::deliveries(&ctx.pool, id, limit).await?)
}
