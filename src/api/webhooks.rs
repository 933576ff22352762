//! Webhooks: admins register receivers of estimate events and read what was delivered to them.

use super::auth::Admin;
use super::error::Problem;
use super::problems::{Busy, Forbidden, JsonBody, NotFound, Unauthorized};
use super::{ApiError, AppState, IdPath};
use crate::app::webhooks::{self as app, NewWebhook};
use crate::store::webhooks::{DeliveryRow, WebhookRow};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(deliveries))
}

/// A receiver to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookForm {
    /// http(s) URL the events are POSTed to (see `SPE_WEBHOOK_ALLOWED_HOSTS`).
    #[schema(example = "https://alerts.example.org/spe")]
    url: String,
    /// HMAC-SHA256 key for `X-Spe-Signature`, 16-256 characters. Stored; never returned.
    #[schema(example = "3f1c0e9a7b2d4c5e8f6a1b0c9d8e7f6a")]
    secret: String,
    /// Any of `estimate.alert`, `estimate.succeeded`, `estimate.failed`.
    #[schema(example = json!(["estimate.alert", "estimate.failed"]))]
    events: Vec<String>,
}

/// A registered receiver (its secret is never shown).
#[derive(Serialize, ToSchema)]
pub struct Webhook {
    id: Uuid,
    url: String,
    events: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<WebhookRow> for Webhook {
    fn from(r: WebhookRow) -> Self {
        Webhook {
            id: r.id,
            url: r.url,
            events: r.events,
            created_at: r.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    items: Vec<Webhook>,
}

/// One event's delivery to one receiver.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    id: Uuid,
    event: String,
    estimate_id: Uuid,
    /// `pending` (due again at `next_attempt_at`), `delivered`, or `failed` (given up).
    state: String,
    attempts: i32,
    /// The receiver's HTTP status on the last attempt, if it answered.
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        Delivery {
            id: r.id,
            event: r.event,
            estimate_id: r.estimate_id,
            state: r.state,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: r.created_at,
            next_attempt_at: r.next_attempt_at,
            delivered_at: r.delivered_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    items: Vec<Delivery>,
}

/// Register a receiver of estimate events. Each delivery is a JSON POST signed with `X-Spe-Signature:
/// t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the secret>`, retried with backoff
/// (1 s doubling to 10 min) for 24 hours until the receiver answers 2xx.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "createWebhook", tag = "webhooks",
    request_body = WebhookForm,
    responses(
        (status = 201, body = Webhook, headers(("Location" = String))),
        Unauthorized, Forbidden, JsonBody, Busy,
        (status = 422, description = "Not an http(s) URL, a host outside SPE_WEBHOOK_ALLOWED_HOSTS, a short secret, or an unknown event", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create(
    state: Admin,
    body: Result<Json<WebhookForm>, JsonRejection>,
) -> Result<(StatusCode, HeaderMap, Json<Webhook>), ApiError> {
    let Json(form) = body?;
    let row = app::create(
        &state,
        NewWebhook {
            url: form.url,
            secret: form.secret,
            events: form.events,
        },
    )
    .await?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("/v1/webhooks/{}", row.id).parse() {
        headers.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, headers, Json(row.into())))
}

/// The registered receivers.
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList), Unauthorized, Forbidden, Busy))]
async fn list(state: Admin) -> Result<Json<WebhookList>, ApiError> {
    let items = app::list(&state).await?;
    Ok(Json(WebhookList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = Webhook), Unauthorized, Forbidden, NotFound, Busy))]
async fn get_webhook(state: Admin, IdPath(id): IdPath) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(app::get(&state, id).await?.into()))
}

/// Remove a receiver; its pending deliveries are dropped.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 204), Unauthorized, Forbidden, NotFound, Busy))]
async fn delete_webhook(state: Admin, IdPath(id): IdPath) -> Result<StatusCode, ApiError> {
    app::delete(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesParams {
    /// How many, newest first: 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// The receiver's latest deliveries, newest first: state, attempts, and the last answer or error.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), DeliveriesParams),
    responses(
        (status = 200, body = DeliveryList),
        Unauthorized, Forbidden, NotFound, Busy,
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
async fn deliveries(
    state: Admin,
    IdPath(id): IdPath,
    query: Result<Query<DeliveriesParams>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = query?.0.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit is {limit}; it must be between 1 and 500"
        )));
    }
    let items = app::deliveries(&state, id, limit).await?;
    Ok(Json(DeliveryList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}
