//! Estimates: submit an unlabeled batch (202 + Location), poll it, list a model's estimates.

use super::auth::Caller;
use super::dto::{Binary, EstimatePage, EstimateView, InputFileView, JobStatus};
use super::error::Problem;
use super::forms::BatchForm;
use super::models::{prepare_unlabelled, stage_set};
use super::problems::{Busy, Forbidden, NotFound, Unauthorized, Uploads};
use super::upload::{self, Part, Upload};
use super::{
    check_queue, idempotency_key, lost_key_race, media_type, race_winner, replay, staged, ApiError,
    AppState, IdPath,
};
use crate::engine::fit::CALIBRATION_FORMAT;
use crate::ingest::expand::NamedImage;
use crate::jobs::queue::{self, JobKind};
use crate::store::blobs::Staged;
use crate::store::calibrations;
use crate::store::estimates::{self, ListQuery};
use crate::store::idempotency::{self, ScopedKey};
use crate::store::image_sets::{self, SetKind};
use crate::store::keys::Role;
use crate::store::models;
use crate::store::received;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
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
    let row = estimates::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("estimate {id} does not exist")))?;
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
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    headers: HeaderMap,
    req: Request,
) -> Result<(StatusCode, HeaderMap, Json<EstimateView>), ApiError> {
    let principal = caller.require(Role::Submitter)?;
    let key = idempotency_key(&headers, &principal, id, "estimates")?;
    let model = models::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model {id} does not exist")))?;
    // Before the body is read: a full queue or a model without calibration costs the client no upload.
    let calibration_id = active_calibration(&state, &model).await?;
    check_queue(&state).await?;
    let mut form = match media_type(&req).as_str() {
        "multipart/form-data" => Upload::read(Multipart::from_request(req, &state).await?, &["image", "archive", "axis"]).await?,
        "application/zip" | "application/x-zip-compressed" => {
            let data = Bytes::from_request(req, &state).await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge("the zip is larger than this server accepts; send fewer images".into())
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })?;
            Upload::from_parts(vec![Part {
                name: "archive".into(),
                file_name: None,
                data,
            }])
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {other:?} is not accepted here: send multipart/form-data with `image` parts, or a zip \
                 as application/zip"
            )))
        }
    };
    let digest = super::blocking({
        let form = form.clone();
        move || form.digest()
    })
    .await?;
    if let Some(existing) = replay(&state, key.as_ref(), &digest).await? {
        let existing = existing.resource_id;
        return Ok((
            StatusCode::ACCEPTED,
            super::location("estimates", existing),
            Json(view(&state, existing).await?),
        ));
    }
    let axis = form.take_axis()?;
    let limits = state.limits.clone();
    let files = super::blocking(move || upload::images(&mut form, &limits, "the batch")).await??;
    let set = prepare_unlabelled(&state, files, axis, "the batch").await?;
    let batch = NewBatch {
        model: &model,
        calibration_id,
        set: &set,
        dicom_instances: &[],
    };
    let (estimate_id, _) = create(&state, key.as_ref(), &digest, batch, |_| None).await?;
    Ok((
        StatusCode::ACCEPTED,
        super::location("estimates", estimate_id),
        Json(view(&state, estimate_id).await?),
    ))
}

/// The calibration a new estimate uses: the model's active one (409 without one, or when an older spe
/// made it and this one cannot read it).
pub(crate) async fn active_calibration(
    state: &AppState,
    model: &models::ModelRow,
) -> Result<Uuid, ApiError> {
    let id = model.id;
    let calibration_id = model.active_calibration_id.ok_or_else(|| {
        ApiError::Conflict(format!(
            "model {id} has no active calibration yet; calibrate it first (POST /v1/models/{id}/calibrations)"
        ))
    })?;
    let format = calibrations::get(&state.pool, calibration_id)
        .await?
        .and_then(|row| row.result)
        .map(|r| r.format().to_owned());
    match format {
        Some(f) if f != CALIBRATION_FORMAT => Err(ApiError::Conflict(format!(
            "model {id}'s active calibration {calibration_id} has format {f:?}, made by an older spe; this one \
             reads {CALIBRATION_FORMAT:?} (a mapping per batch size): calibrate again (POST \
             /v1/models/{id}/calibrations)"
        ))),
        _ => Ok(calibration_id),
    }
}

/// A validated batch for a model's active calibration, with the SOP Instance UIDs of the DICOM instances
/// it came from when they were sent through STOW-RS.
pub(crate) struct NewBatch<'a> {
    pub model: &'a models::ModelRow,
    pub calibration_id: Uuid,
    pub set: &'a [NamedImage],
    pub dicom_instances: &'a [String],
}

/// Stores a validated batch and queues its estimate, in one transaction, with the Idempotency-Key and
/// the answer `response` builds for replays, if any, and the SOP Instance UIDs of DICOM instances sent
/// through STOW-RS (so that a resent instance is recognised). A concurrent request with the same key that
/// committed first wins: its estimate and answer are returned (when it was the same request).
pub(crate) async fn create(
    state: &AppState,
    key: Option<&ScopedKey>,
    digest: &str,
    batch: NewBatch<'_>,
    response: impl Fn(Uuid) -> Option<serde_json::Value>,
) -> Result<(Uuid, Option<serde_json::Value>), ApiError> {
    let NewBatch {
        model,
        calibration_id,
        set,
        dicom_instances,
    } = batch;
    let estimate_id = Uuid::new_v4();
    let answer = response(estimate_id);
    let result = staged(state, async |staged: &mut Staged| {
        let items = stage_set(state, staged, set).await?;
        let tx = staged.tx();
        let set_id = image_sets::insert(tx, SetKind::Batch, &items).await?;
        estimates::insert(tx, estimate_id, model.id, calibration_id, set_id).await?;
        queue::enqueue(tx, estimate_id, JobKind::Estimate, state.max_attempts).await?;
        if !dicom_instances.is_empty() {
            received::record(tx, model.id, estimate_id, dicom_instances).await?;
        }
        if let Some(key) = key {
            idempotency::record(tx, key, digest, estimate_id, answer.as_ref()).await?;
        }
        Ok(())
    })
    .await;
    let created = match result {
        Err(e) if lost_key_race(&e) => {
            let winner = race_winner(state, key, digest).await?;
            (winner.resource_id, winner.response)
        }
        Err(e) => return Err(e),
        Ok(()) => {
            metrics::counter!("spe_estimates_submitted_total").increment(1);
            (estimate_id, answer)
        }
    };
    Ok(created)
}

/// One estimate: status (queued, running with progress, succeeded, failed with a reason) and, when done,
/// the estimates with intervals, pseudo metrics, support counts and timings.
#[utoipa::path(get, path = "/v1/estimates/{id}", operation_id = "getEstimate", tag = "estimates",
    params(("id" = Uuid, Path, description = "Estimate id")),
    responses(
        (status = 200, body = EstimateView),
        Unauthorized, NotFound, Busy,
    ))]
async fn get_estimate(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<EstimateView>, ApiError> {
    caller.require(Role::Reader)?;
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
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EstimatePage>, ApiError> {
    caller.require(Role::Reader)?;
    let Query(params) = query?;
    models::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model {id} does not exist")))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit is {limit}; it must be between 1 and 500"
        )));
    }
    let status = params.status.map(crate::store::JobState::from);
    let q = ListQuery {
        model: id,
        from: params.from,
        to: params.to,
        state: status,
        after: params.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut rows = estimates::list(&state.pool, &q).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(r.created_at, r.id))
    } else {
        None
    };
    Ok(Json(EstimatePage {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
