//! DICOMweb STOW-RS style intake: POST a multipart/related body of DICOM instances; the instances that
//! decode become an estimate job, and the answer lists accepted and failed instances as STOW-RS does
//! (application/dicom+json), with the estimate's Location.

use super::auth::Submitter;
use super::dto::Binary;
use super::error::Problem;
use super::problems::{Busy, Forbidden, NotFound, Unauthorized, Uploads};
use super::{idempotency_key, ApiError, AppState, IdPath};
use crate::app::studies::Outcome;
use crate::app::{estimates, studies, AppError};
use crate::ingest::multipart::{related_boundary, related_parts};
use crate::ingest::IngestError;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(store_instances))
}

fn ui(value: &Option<String>) -> Value {
    match value {
        Some(v) => json!({ "vr": "UI", "Value": [v] }),
        None => json!({ "vr": "UI" }),
    }
}

/// The STOW-RS response dataset: RetrieveURL (the estimate), ReferencedSOPSequence, FailedSOPSequence. A
/// failure's reason text goes in ErrorComment (0000,0902) beside the FailureReason code.
fn stow_response(location: &str, out: &Outcome) -> Value {
    let referenced: Vec<Value> = out
        .accepted
        .iter()
        .map(|a| {
            json!({
                "00081150": ui(&a.sop_class_uid),
                "00081155": ui(&a.sop_instance_uid),
            })
        })
        .collect();
    let failed: Vec<Value> = out
        .failed
        .iter()
        .map(|f| {
            json!({
                "00081150": ui(&f.sop_class_uid),
                "00081155": ui(&f.sop_instance_uid),
                "00081197": { "vr": "US", "Value": [f.code] },
                "00000902": { "vr": "LO", "Value": [f.reason] },
            })
        })
        .collect();
    let mut body = Map::new();
    body.insert(
        "00081190".into(),
        json!({ "vr": "UR", "Value": [location] }),
    );
    body.insert(
        "00081199".into(),
        json!({ "vr": "SQ", "Value": referenced }),
    );
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    Value::Object(body)
}

fn ingest_error(source: IngestError) -> ApiError {
    ApiError::App(AppError::Ingest {
        file: "the request body".into(),
        source,
    })
}

/// Store DICOM instances (DICOMweb STOW-RS style) and estimate the model's performance on them. Every
/// frame of every instance that decodes is one image of the batch; instances that do not decode, and
/// instances this model received before, are listed as failed. 200 when every instance was stored, 202
/// when some were, 409 when none was (PS3.18), with the estimate's Location.
///
/// Client generators cannot send multipart/related; use a DICOMweb client with the model as its base
/// URL, e.g. Python's `dicomweb-client`:
/// `DICOMwebClient(url=f"{SPE}/v1/models/{model_id}", headers={"Authorization": f"Bearer {key}"})
/// .store_instances([pydicom.dcmread(f) for f in files])`, or curl as in README walkthrough step 6.
#[utoipa::path(post, path = "/v1/models/{id}/studies", operation_id = "storeStudyInstances", tag = "estimates",
    params(
        ("id" = Uuid, Path, description = "Model id"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retried POST with the same key returns the first estimate instead of a new one. 1-200 visible ASCII characters (spaces inside allowed)",
            nullable = false, min_length = 1, max_length = 200, pattern = r"^[!-~]([ -~]{0,198}[!-~])?$"),
    ),
    request_body(content = Binary, content_type = "multipart/related",
        description = "multipart/related; type=\"application/dicom\"; boundary=...: one DICOM Part 10 file per part"),
    responses(
        (status = 200, description = "Every instance was stored; the estimate is queued. Body: STOW-RS response (application/dicom+json) with RetrieveURL (0008,1190) = the estimate and ReferencedSOPSequence (0008,1199)", body = Object, content_type = "application/dicom+json", headers(("Location" = String))),
        (status = 202, description = "Some instances were stored (the estimate is queued with them), some failed: the body adds FailedSOPSequence (0008,1198) whose items carry FailureReason (0008,1197) and ErrorComment (0000,0902); an instance this model received before fails as a duplicate (0x0111)", body = Object, content_type = "application/dicom+json", headers(("Location" = String))),
        Unauthorized, Forbidden, NotFound, Uploads, Busy,
        (status = 409, description = "No instance was stored (each part is named with its reason), or the model has no active calibration", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart/related of application/dicom", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The decoded images cannot make a batch", body = Problem, content_type = "application/problem+json"),
    ))]
async fn store_instances(
    state: Submitter,
    IdPath(id): IdPath,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let principal = state.principal;
    let key = idempotency_key(&headers, &principal, id, "studies")?;
    let target = estimates::admit(&state, id).await?;
    let boundary = dicom_boundary(&headers)?;
    let body = Bytes::from_request(req, &state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "the body is larger than this server accepts; send fewer instances per request"
                    .into(),
            )
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let parts = related_parts(&boundary, body, state.limits.max_images)
        .await
        .map_err(ingest_error)?;
    let (estimate_id, answer) = studies::store(&state, &target, key.as_ref(), parts, |id, out| {
        stow_response(&estimate_location(id), out)
    })
    .await?;
    Ok(respond_again(estimate_id, answer))
}

/// The multipart boundary of a multipart/related body of application/dicom parts.
fn dicom_boundary(headers: &HeaderMap) -> Result<String, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (boundary, kind) = related_boundary(content_type).map_err(|e| {
        ApiError::UnsupportedMediaType(format!(
            "{e}; send multipart/related; type=\"application/dicom\"; boundary=... with one DICOM file per part"
        ))
    })?;
    if let Some(kind) = kind.filter(|k| k != "application/dicom") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "multipart/related of type {kind:?} is not accepted; this endpoint takes type=\"application/dicom\""
        )));
    }
    Ok(boundary)
}

fn estimate_location(id: uuid::Uuid) -> String {
    format!("/v1/estimates/{id}")
}

/// The answer recorded when the estimate was created, verbatim, so that a replay of the request gets
/// the same STOW-RS response (an estimate recorded without one gets its Location only).
fn respond_again(estimate_id: uuid::Uuid, answer: Option<Value>) -> Response {
    let location = estimate_location(estimate_id);
    let body = answer.unwrap_or_else(|| stow_response(&location, &Outcome::default()));
    respond(&location, body)
}

/// 200 when every instance was stored, 202 when some failed (PS3.18).
fn respond(location: &str, body: Value) -> Response {
    let status = if body.get("00081198").is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    response
}
