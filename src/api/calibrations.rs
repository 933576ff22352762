//! Calibrations: from checkpoints or predicted masks (queued jobs) or from (pseudo, real) pairs (fitted
//! on the spot). A model has at most one active calibration; estimates use it.

use super::auth::{Admin, Reader};
use super::dto::{CalibrationList, CalibrationView, PairsRequest, Params};
use super::error::Problem;
use super::forms::CalibrationForm;
use super::problems::{Busy, Forbidden, NotFound, Unauthorized, Uploads};
use super::upload::{self, Upload};
use super::{idempotency_key, media_type, ApiError, AppState, IdPath};
use crate::app::calibrations::{
    self as app, CalibrationUpload, MaskFolders, PairsFit, UploadedCheckpoint,
};
use crate::app::{blocking, models as app_models, Keyed};
use crate::digest::sha256_hex;
use crate::engine::fit::CheckpointPoint;
use crate::engine::spe::{PseudoOutcome, SpeParams, SupportCount};
use crate::store::calibrations;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_calibration))
        .routes(routes!(activate))
}

async fn view(state: &AppState, id: Uuid) -> Result<CalibrationView, ApiError> {
    Ok(app::get(state, id).await?.into())
}

/// Calibrate a model. multipart/form-data: a job from checkpoints or predicted masks (202; poll the
/// Location). application/json: a fit of (pseudo, real) pairs computed elsewhere (201, done).
#[utoipa::path(post, path = "/v1/models/{id}/calibrations", operation_id = "createCalibration", tag = "calibrations",
    params(
        ("id" = Uuid, Path, description = "Model id"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retried POST with the same key returns the first job. 1-200 visible ASCII characters (spaces inside allowed)",
            nullable = false, min_length = 1, max_length = 200, pattern = r"^[!-~]([ -~]{0,198}[!-~])?$"),
    ),
    request_body(content(
        (CalibrationForm = "multipart/form-data"),
        (PairsRequest = "application/json"),
    )),
    responses(
        (status = 201, description = "Fitted from pairs", body = CalibrationView, headers(("Location" = String))),
        (status = 202, description = "Queued", body = CalibrationView, headers(("Location" = String))),
        Unauthorized, Forbidden, NotFound, Uploads, Busy,
        (status = 409, description = "The model has no reference set yet", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create(
    state: Admin,
    IdPath(id): IdPath,
    headers: HeaderMap,
    req: Request,
) -> Result<(StatusCode, HeaderMap, Json<CalibrationView>), ApiError> {
    let principal = state.principal;
    let key = idempotency_key(&headers, &principal, id, "calibrations")?;
    let media = media_type(&req);
    // Before the body is read: a full queue costs the client no upload.
    let target = app::admit(&state, id, media == "multipart/form-data").await?;
    let (status, calibration_id) = match media.as_str() {
        "application/json" => {
            let Json(body) = Json::<PairsRequest>::from_request(req, &state).await?;
            let (fit, digest) = pairs_fit(body)?;
            let keyed = key.as_ref().map(|key| Keyed { key, digest: &digest });
            (StatusCode::CREATED, app::from_pairs(&state, &target, keyed, fit).await?)
        }
        "multipart/form-data" => {
            let multipart = Multipart::from_request(req, &state).await?;
            let (upload, digest) = calibration_upload(&state, multipart).await?;
            let keyed = key.as_ref().map(|key| Keyed { key, digest: &digest });
            (StatusCode::ACCEPTED, app::from_upload(&state, &target, keyed, upload).await?)
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {other:?} is not accepted here: send multipart/form-data (checkpoints or masks) or \
                 application/json (pairs)"
            )))
        }
    };
    let view = view(&state, calibration_id).await?;
    Ok((
        status,
        super::location("calibrations", calibration_id),
        Json(view),
    ))
}

/// A calibration job's form, parsed, and its digest (for Idempotency-Key replays).
async fn calibration_upload(
    state: &AppState,
    multipart: Multipart,
) -> Result<(CalibrationUpload, String), ApiError> {
    let parts = [
        "checkpoint",
        "masks",
        "image",
        "label",
        "archive",
        "params",
        "activate",
        "axis",
    ];
    let mut form = Upload::read(multipart, &parts).await?;
    let digest = blocking({
        let form = form.clone();
        move || form.digest()
    })
    .await?;
    let params = parse_params(form.take_text("params")?)?;
    let activate = parse_activate(form.take_text("activate")?)?;
    let checkpoints = form
        .take_all("checkpoint")
        .into_iter()
        .map(|part| UploadedCheckpoint {
            name: part
                .file_name
                .as_deref()
                .map(upload::stem)
                .unwrap_or_default(),
            onnx: part.data,
        })
        .collect();
    let masks = match form.take_one("masks")? {
        None => None,
        Some(zip) => {
            let limits = state.limits.clone();
            Some(blocking(move || mask_folders(&zip.data, &limits)).await??)
        }
    };
    let axis = form.take_axis()?;
    let limits = state.limits.clone();
    let pairs =
        blocking(move || upload::labelled(&mut form, &limits, "the calibration set")).await??;
    let upload = CalibrationUpload {
        params,
        activate,
        checkpoints,
        masks,
        pairs,
        axis,
    };
    Ok((upload, digest))
}

fn parse_params(text: Option<String>) -> Result<SpeParams, ApiError> {
    let params: Params = match text {
        None => Params::default(),
        Some(t) => serde_json::from_str(&t).map_err(|e| {
            ApiError::Unprocessable(format!("form part \"params\" is invalid: {e}"))
        })?,
    };
    params.checked()
}

fn parse_activate(text: Option<String>) -> Result<bool, ApiError> {
    match text.as_deref().map(str::trim) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(ApiError::Unprocessable(format!(
            "activate must be \"true\" or \"false\", not {other:?}"
        ))),
    }
}

/// Masks zip -> per checkpoint folder (`<checkpoint>/<image>.png`), each mask under its file stem. Masks
/// are named by position in the zip: their file names can carry patient names.
fn mask_folders(zip: &Bytes, limits: &super::Limits) -> Result<MaskFolders, ApiError> {
    let mut folders = MaskFolders::new();
    for (path, data, position) in upload::unzip(zip, limits, "the masks zip")? {
        let mut parts = path
            .split('/')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>();
        let Some(file) = parts.pop() else { continue };
        let lower = file.to_ascii_lowercase();
        if file.starts_with('.')
            || !(lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg"))
        {
            continue;
        }
        let checkpoint = parts.last().ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "file #{position} of the masks zip is not inside a checkpoint folder \
                 (<checkpoint>/<image>.png)"
            ))
        })?;
        folders
            .entry(checkpoint.to_string())
            .or_default()
            .insert(upload::stem(file), (data, position));
    }
    Ok(folders)
}

/// A pairs request as the fit it asks for, and its digest: the parsed body, re-serialised, so that retries
/// that differ only in JSON formatting are the same request.
fn pairs_fit(body: PairsRequest) -> Result<(PairsFit, String), ApiError> {
    // PostgreSQL cannot store NUL in text or jsonb: refused here rather than failing the insert (a 500).
    if let Some(p) = body.points.iter().find(|p| p.name.contains('\0')) {
        return Err(ApiError::Unprocessable(format!(
            "point name {:?} contains a NUL character",
            p.name
        )));
    }
    let digest = sha256_hex(
        serde_json::to_string(&body)
            .map_err(|e| ApiError::internal(format!("cannot serialise the request: {e}")))?
            .as_bytes(),
    );
    let no_support = SupportCount {
        used: 0,
        rejected: 0,
    };
    let points = body
        .points
        .into_iter()
        .map(|p| {
            let outcome = match p.pseudo {
                Some(pseudo) => PseudoOutcome::Ok {
                    pseudo: pseudo.into(),
                    per_repetition: vec![pseudo.into()],
                    support: no_support,
                },
                None => PseudoOutcome::InsufficientSupport {
                    support: no_support,
                },
            };
            CheckpointPoint::from_pair(p.name, p.real.into(), outcome)
        })
        .collect();
    let fit = PairsFit {
        params: body.params.checked()?,
        points,
        activate: body.activate,
    };
    Ok((fit, digest))
}

/// A model's calibrations, newest first.
#[utoipa::path(get, path = "/v1/models/{id}/calibrations", operation_id = "listCalibrations", tag = "calibrations",
    params(("id" = Uuid, Path, description = "Model id")),
    responses((status = 200, body = CalibrationList), Unauthorized, NotFound, Busy))]
async fn list(state: Reader, IdPath(id): IdPath) -> Result<Json<CalibrationList>, ApiError> {
    app_models::get(&state, id).await?;
    let items = calibrations::list(&state.pool, id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(CalibrationList { items }))
}

/// One calibration: status, progress and, when done, the fits and points.
#[utoipa::path(get, path = "/v1/calibrations/{id}", operation_id = "getCalibration", tag = "calibrations",
    params(("id" = Uuid, Path, description = "Calibration id")),
    responses((status = 200, body = CalibrationView), Unauthorized, NotFound, Busy))]
async fn get_calibration(
    state: Reader,
    IdPath(id): IdPath,
) -> Result<Json<CalibrationView>, ApiError> {
    Ok(Json(view(&state, id).await?))
}

/// Make a succeeded calibration the model's active one.
#[utoipa::path(post, path = "/v1/calibrations/{id}/activate", operation_id = "activateCalibration", tag = "calibrations",
    params(("id" = Uuid, Path, description = "Calibration id")),
    responses(
        (status = 200, body = CalibrationView),
        Unauthorized, Forbidden, NotFound, Busy,
        (status = 409, description = "Not succeeded (yet)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn activate(state: Admin, IdPath(id): IdPath) -> Result<Json<CalibrationView>, ApiError> {
    app::activate(&state, id).await?;
    Ok(Json(view(&state, id).await?))
}
