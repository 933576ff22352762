//! DICOMweb STOW-RS style intake: POST a multipart/related body of DICOM instances; the instances that
//! decode become an estimate job, and the answer lists accepted and failed instances as STOW-RS does
//! (application/dicom+json), with the estimate's Location.

use super::auth::Caller;
use super::dto::Binary;
use super::error::Problem;
use super::estimates::{self, active_calibration};
use super::models::expand_options;
use super::problems::{Busy, Forbidden, NotFound, Unauthorized, Uploads};
use super::{check_queue, idempotency_key, replay, ApiError, AppState, IdPath};
use crate::ingest::expand::{self, dicom_name_of, DicomImages, NamedImage};
use crate::ingest::multipart::{related_boundary, related_parts, RelatedPart};
use crate::ingest::{dicom, IngestError};
use crate::store::blobs::sha256_hex;
use crate::store::keys::Role;
use crate::store::models;
use crate::store::received;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(store_instances))
}

/// STOW-RS failure reasons (PS3.18 table "Store Instances Response Failure Reason").
mod reason {
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const DUPLICATE: u16 = 0x0111;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    pub const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
}

struct Failed {
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
    code: u16,
    reason: String,
}

struct Accepted {
    part: usize,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
    images: Vec<NamedImage>,
}

/// What became of each part, in body order.
#[derive(Default)]
struct Outcome {
    accepted: Vec<Accepted>,
    failed: Vec<Failed>,
}

impl Outcome {
    /// The accepted instances' images, moved out (the response needs only the instances' UIDs).
    fn take_images(&mut self) -> Vec<NamedImage> {
        self.accepted
            .iter_mut()
            .flat_map(|a| std::mem::take(&mut a.images))
            .collect()
    }

    fn instance_uids(&self) -> Vec<String> {
        self.accepted
            .iter()
            .filter_map(|a| a.sop_instance_uid.clone())
            .collect()
    }

    /// Moves instances the model received before to the failures (PS3.18's duplicate reason).
    fn drop_received(&mut self, received: &std::collections::HashMap<String, uuid::Uuid>) {
        let (again, new): (Vec<_>, Vec<_>) = std::mem::take(&mut self.accepted)
            .into_iter()
            .partition(|a| {
                a.sop_instance_uid
                    .as_ref()
                    .is_some_and(|uid| received.contains_key(uid))
            });
        self.accepted = new;
        for a in again {
            let estimate = a
                .sop_instance_uid
                .as_ref()
                .and_then(|uid| received.get(uid))
                .map(|id| format!(" (estimate /v1/estimates/{id})"))
                .unwrap_or_default();
            self.failed.push(Failed {
                sop_class_uid: a.sop_class_uid,
                sop_instance_uid: a.sop_instance_uid,
                code: reason::DUPLICATE,
                reason: format!(
                    "part {}: this instance was already received for this model{estimate}",
                    a.part
                ),
            });
        }
    }
}

fn failure_code(e: &IngestError) -> u16 {
    match e {
        IngestError::UnsupportedTransferSyntax { .. } => reason::TRANSFER_SYNTAX_NOT_SUPPORTED,
        IngestError::TooLarge(_) => reason::OUT_OF_RESOURCES,
        IngestError::Malformed(_) => reason::CANNOT_UNDERSTAND,
        IngestError::Unsupported(_) => reason::PROCESSING_FAILURE,
    }
}

/// Decodes every part. CPU-bound: call from `spawn_blocking`.
fn sort_parts(parts: &[RelatedPart], opts: &expand::Options) -> Outcome {
    let mut out = Outcome::default();
    let mut seen_digests = HashSet::new();
    let mut seen_uids = HashSet::new();
    for (i, part) in parts.iter().enumerate() {
        let n = i + 1;
        let fail = |class, uid, code, reason: String| Failed {
            sop_class_uid: class,
            sop_instance_uid: uid,
            code,
            reason,
        };
        let ct = part.content_type.as_deref().unwrap_or("none");
        if ct != "application/dicom" {
            out.failed.push(fail(
                None,
                None,
                reason::CANNOT_UNDERSTAND,
                format!("part {n} has Content-Type {ct}; each part must be application/dicom"),
            ));
            continue;
        }
        let sha = sha256_hex(&part.data);
        if !seen_digests.insert(sha.clone()) {
            out.failed.push(fail(
                None,
                None,
                reason::DUPLICATE,
                format!("part {n} repeats an earlier part"),
            ));
            continue;
        }
        match expand::dicom_images(&dicom_name_of(&sha), &part.data, &sha, opts) {
            Err(dicom::Failure {
                sop_class_uid,
                sop_instance_uid,
                error,
            }) => out.failed.push(fail(
                sop_class_uid,
                sop_instance_uid,
                failure_code(&error),
                format!("part {n}: {error}"),
            )),
            Ok(DicomImages {
                sop_class_uid,
                sop_instance_uid,
                images,
            }) => {
                if let Some(uid) = &sop_instance_uid {
                    if !seen_uids.insert(uid.clone()) {
                        out.failed.push(fail(
                            sop_class_uid,
                            sop_instance_uid,
                            reason::DUPLICATE,
                            format!("part {n}: an earlier part has the same SOP Instance UID"),
                        ));
                        continue;
                    }
                }
                out.accepted.push(Accepted {
                    part: n,
                    sop_class_uid,
                    sop_instance_uid,
                    images,
                });
            }
        }
    }
    out
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

/// When nothing was stored: 409, as PS3.18 has it, naming each part's problem. Parts are named by
/// position, not SOP Instance UID: UIDs can be traced back to a patient.
fn nothing_stored(out: &Outcome) -> ApiError {
    let reasons: Vec<String> = out.failed.iter().map(|f| f.reason.clone()).collect();
    ApiError::Conflict(format!("no instance was stored: {}", reasons.join("; ")))
}

/// A digest of the instances sent (not of the framing), for Idempotency-Key replays.
fn parts_digest(parts: &[RelatedPart]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(sha256_hex(&p.data));
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn ingest_error(source: IngestError) -> ApiError {
    ApiError::Ingest {
        file: "the request body".into(),
        source,
    }
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
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let principal = caller.require(Role::Submitter)?;
    let key = idempotency_key(&headers, &principal, id, "studies")?;
    let model = models::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model {id} does not exist")))?;
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
    // Before the body is read: a full queue or a model without calibration costs the client no upload.
    let calibration_id = active_calibration(&state, &model).await?;
    check_queue(&state).await?;
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
    let (parts, digest) = super::blocking(move || {
        let digest = parts_digest(&parts);
        (parts, digest)
    })
    .await?;
    if let Some(first) = replay(&state, key.as_ref(), &digest).await? {
        return Ok(respond_again(first.resource_id, first.response));
    }
    let opts = expand_options(&state, None, 0);
    let mut out = tokio::task::spawn_blocking(move || sort_parts(&parts, &opts)).await?;
    let received = received::known(&state.pool, model.id, &out.instance_uids()).await?;
    out.drop_received(&received);
    if out.accepted.is_empty() {
        return Err(nothing_stored(&out));
    }
    let images = out.take_images();
    expand::check_total(&images, "the request", &expand_options(&state, None, 0))?;
    let instances = out.instance_uids();
    let batch = estimates::NewBatch {
        model: &model,
        calibration_id,
        set: &images,
        dicom_instances: &instances,
    };
    let (estimate_id, answer) = estimates::create(&state, key.as_ref(), &digest, batch, |id| {
        Some(stow_response(&estimate_location(id), &out))
    })
    .await?;
    Ok(respond_again(estimate_id, answer))
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
