//! Estimates: submit an unlabeled batch (202 + Location), poll it, list a model's estimates.

use super::auth::{Reader, Submitter};
use super::dto::{Binary, EstimateKindView, EstimatePage, EstimateView, InputFileView, JobStatus};
use super::error::Problem;
use super::forms::BatchForm;
use super::problems::{Busy, Forbidden, NotFound, Unauthorized, Uploads};
use super::upload::{self, Part, Upload};
use super::{idempotency_key, media_type, ApiError, AppState, IdPath};
use crate::app::estimates as app;
use crate::app::{blocking, Keyed};
use crate::store::estimates::ListQuery;
use crate::store::image_sets;
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit, list))
        .routes(routes!(get_estimate))
}

pub(crate) async fn view(state: &AppState, id: Uuid) -> Result<EstimateView, ApiError> {
    let row = app::get(state, id).await?;
    let inputs = image_sets::sources(&state.pool, row.batch_set_id)
        .await?
        .into_iter()
        .map(|(sha256, format, images)| InputFileView {
            sha256,
            format,
            images,
        })
        .collect();
    let mut view = EstimateView::from(row);
    view.inputs = Some(inputs);
    Ok(view)
}

/// Submit an unlabeled batch for an estimate with the model's active calibration. The job runs in the
/// background: poll the Location.
#[utoipa::path(post, path = "/v1/models/{id}/estimates", operation_id = "submitEstimate", tag = "estimates",
    params(
        ("id" = Uuid, Path, description = "Model id"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retried POST with the same key returns the first estimate instead of a new one. 1-200 visible ASCII characters (spaces inside allowed)",
            nullable = false, min_length = 1, max_length = 200, pattern = r"^[!-~]([ -~]{0,198}[!-~])?$"),
    ),
    request_body(content(
        (BatchForm = "multipart/form-data"),
        (Binary = "application/zip"),
    )),
    responses(
        (status = 202, description = "Queued (or, for a replayed Idempotency-Key, the existing estimate)", body = EstimateView, headers(("Location" = String))),
        Unauthorized, Forbidden, NotFound, Uploads, Busy,
        (status = 409, description = "The model has no active calibration", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large or too many images", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty batch, unreadable or oversized image", body = Problem, content_type = "application/problem+json"),
    ))]
async fn submit(
    state: Submitter,
    IdPath(id): IdPath,
    headers: HeaderMap,
    req: Request,
) -> Result<(StatusCode, HeaderMap, Json<EstimateView>), ApiError> {
    let principal = state.principal;
    let key = idempotency_key(&headers, &principal, id, "estimates")?;
    // Before the body is read: a full queue or a model without calibration costs the client no upload.
    let target = app::admit(&state, id).await?;
    let mut form = batch_form(&state, req).await?;
    let digest = blocking({
        let form = form.clone();
        move || form.digest()
    })
    .await?;
    let axis = form.take_axis()?;
    let limits = state.limits.clone();
    let files = blocking(move || upload::images(&mut form, &limits, "the batch")).await??;
    let keyed = key.as_ref().map(|key| Keyed {
        key,
        digest: &digest,
    });
    let estimate_id = app::submit(&state, &target, keyed, files, axis).await?;
    Ok((
        StatusCode::ACCEPTED,
        super::location("estimates", estimate_id),
        Json(view(&state, estimate_id).await?),
    ))
}

/// A batch as multipart `image`/`archive` parts, or one zip sent as the body.
async fn batch_form(state: &AppState, req: Request) -> Result<Upload, ApiError> {
    match media_type(&req).as_str() {
        "multipart/form-data" => {
            let multipart = Multipart::from_request(req, state).await?;
            Upload::read(multipart, &["image", "archive", "axis"]).await
        }
        "application/zip" | "application/x-zip-compressed" => {
            let data = Bytes::from_request(req, state).await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(
                        "the zip is larger than this server accepts; send fewer images".into(),
                    )
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })?;
            Ok(Upload::from_parts(vec![Part {
                name: "archive".into(),
                file_name: None,
                data,
            }]))
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type {other:?} is not accepted here: send multipart/form-data with `image` parts, or a zip \
             as application/zip"
        ))),
    }
}

/// One estimate: status (queued, running with progress, succeeded, failed with a reason) and, when done,
/// the estimates with intervals, pseudo metrics, support counts and timings.
#[utoipa::path(get, path = "/v1/estimates/{id}", operation_id = "getEstimate", tag = "estimates",
    params(("id" = Uuid, Path, description = "Estimate id")),
    responses((status = 200, body = EstimateView), Unauthorized, NotFound, Busy))]
async fn get_estimate(state: Reader, IdPath(id): IdPath) -> Result<Json<EstimateView>, ApiError> {
    Ok(Json(view(&state, id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only estimates submitted at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Only estimates submitted before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Only estimates in this state.
    status: Option<JobStatus>,
    /// Only batch estimates (`batch`) or rolling-window ones (`window`).
    kind: Option<EstimateKindView>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (opaque; any other value is a 400).
    cursor: Option<String>,
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    let raw = format!(
        "{}|{id}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || {
        ApiError::BadRequest("cursor is not one this API returned; start again without it".into())
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, id) = raw.split_once('|').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|_| bad())?
        .with_timezone(&Utc);
    Ok((at, id.parse().map_err(|_| bad())?))
}

/// A model's estimates, newest first, with a time range and cursor pagination (for dashboards).
#[utoipa::path(get, path = "/v1/models/{id}/estimates", operation_id = "listEstimates", tag = "estimates",
    params(("id" = Uuid, Path, description = "Model id"), ListParams),
    responses(
        (status = 200, body = EstimatePage),
        Unauthorized, NotFound, Busy,
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    state: Reader,
    IdPath(id): IdPath,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EstimatePage>, ApiError> {
    let Query(params) = query?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit is {limit}; it must be between 1 and 500"
        )));
    }
    let query = ListQuery {
        model: id,
        from: params.from,
        to: params.to,
        state: params.status.map(crate::store::JobState::from),
        kind: params.kind.map(Into::into),
        after: params.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let (rows, more) = app::list(&state, query).await?;
    let next_cursor = more
        .then(|| rows.last().map(|r| encode_cursor(r.created_at, r.id)))
        .flatten();
    Ok(Json(EstimatePage {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
