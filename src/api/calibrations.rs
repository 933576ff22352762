//! Calibrations: from checkpoints or predicted masks (queued jobs) or from (pseudo, real) pairs (fitted
//! on the spot). A model has at most one active calibration; estimates use it.

use super::auth::Caller;
use super::dto::{CalibrationList, CalibrationView, PairsRequest, Params};
use super::error::Problem;
use super::forms::CalibrationForm;
use super::models::{prepare_labelled, stage_set};
use super::problems::{Busy, Forbidden, NotFound, Unauthorized, Uploads};
use super::upload::{self, Upload};
use super::{
    check_queue, idempotency_key, lost_key_race, media_type, race_winner, replay, staged, ApiError,
    AppState, IdPath,
};
use crate::engine::fit::{Calibration, CheckpointPoint, MIN_POINTS};
use crate::engine::image_io;
use crate::engine::spe::{PseudoOutcome, SpeParams, SupportCount};
use crate::inference::{ModelSpec, SegModel};
use crate::jobs::queue::{self, JobKind};
use crate::store::blobs::sha256_hex;
use crate::store::blobs::Staged;
use crate::store::calibrations::{self, CheckpointRow, NewCalibration};
use crate::store::idempotency::{self, ScopedKey};
use crate::store::image_sets::{self, Item, SetKind};
use crate::store::keys::Role;
use crate::store::{self, models};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use std::collections::BTreeMap;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_calibration))
        .routes(routes!(activate))
}

async fn view(state: &AppState, id: Uuid) -> Result<CalibrationView, ApiError> {
    Ok(calibrations::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("calibration {id} does not exist")))?
        .into())
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
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    headers: HeaderMap,
    req: Request,
) -> Result<(StatusCode, HeaderMap, Json<CalibrationView>), ApiError> {
    let principal = caller.require(Role::Admin)?;
    let key = idempotency_key(&headers, &principal, id, "calibrations")?;
    let model = models::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model {id} does not exist")))?;
    let reference_set_id = model.reference_set_id.ok_or_else(|| {
        ApiError::Conflict(format!(
            "model {id} has no reference set yet; PUT /v1/models/{id}/reference-set first"
        ))
    })?;
    let calibration_id = match media_type(&req).as_str() {
        "application/json" => {
            let Json(body) = Json::<PairsRequest>::from_request(req, &state).await?;
            let cal = from_pairs(&state, &model, reference_set_id, body, key.as_ref()).await?;
            return Ok((StatusCode::CREATED, super::location("calibrations", cal), Json(view(&state, cal).await?)));
        }
        "multipart/form-data" => {
            // Before the body is read: a full queue costs the client no upload.
            check_queue(&state).await?;
            let multipart = Multipart::from_request(req, &state).await?;
            let mut form = Upload::read(
                multipart,
                &["checkpoint", "masks", "image", "label", "archive", "params", "activate", "axis"],
            )
            .await?;
            let digest = super::blocking({
                let form = form.clone();
                move || form.digest()
            })
            .await?;
            match replay(&state, key.as_ref(), &digest).await? {
                Some(first) => first.resource_id,
                None => {
                    let idem = key.as_ref().map(|k| (k, digest.as_str()));
                    from_upload(&state, &model, reference_set_id, &mut form, idem).await?
                }
            }
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {other:?} is not accepted here: send multipart/form-data (checkpoints or masks) or \
                 application/json (pairs)"
            )))
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        super::location("calibrations", calibration_id),
        Json(view(&state, calibration_id).await?),
    ))
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

/// What one checkpoint contributes: its ONNX file or its predicted masks (in calibration-set order).
enum Source {
    Model(String, Bytes),
    Masks(String, Vec<(String, Bytes)>),
}

/// Masks zip -> per checkpoint folder, masks ordered like the calibration set; every image needs one.
fn masks_by_checkpoint(
    zip: &Bytes,
    names: &[String],
    limits: &super::Limits,
) -> Result<Vec<Source>, ApiError> {
    // Messages name masks by position in the zip and calibration images by position in the set: their
    // file names can carry patient names.
    let mut folders: BTreeMap<String, BTreeMap<String, (Bytes, usize)>> = BTreeMap::new();
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
    folders
        .into_iter()
        .map(|(checkpoint, mut masks)| {
            let ordered = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    masks.remove(n).map(|(m, _)| (n.clone(), m)).ok_or_else(|| {
                        ApiError::Unprocessable(format!(
                            "checkpoint {checkpoint:?} has no mask for calibration image #{} (in file \
                             name order; a mask takes its image's file name)",
                            i + 1
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some((_, position)) = masks.values().next() {
                return Err(ApiError::Unprocessable(format!(
                    "checkpoint {checkpoint:?}: file #{position} of the masks zip is a mask for no \
                     calibration image (a mask takes its image's file name)"
                )));
            }
            Ok(Source::Masks(checkpoint, ordered))
        })
        .collect()
}

async fn from_upload(
    state: &AppState,
    model: &models::ModelRow,
    reference_set_id: Uuid,
    form: &mut Upload,
    idem: Option<(&ScopedKey, &str)>,
) -> Result<Uuid, ApiError> {
    let params = parse_params(form.take_text("params")?)?;
    let activate = parse_activate(form.take_text("activate")?)?;
    let checkpoints = form.take_all("checkpoint");
    let masks = form.take_one("masks")?;
    let axis = form.take_axis()?;
    let (mut rest, limits) = (std::mem::take(form), state.limits.clone());
    let pairs =
        super::blocking(move || upload::labelled(&mut rest, &limits, "the calibration set"))
            .await??;
    let set = prepare_labelled(state, pairs, axis, params.min_area, "the calibration set").await?;
    let names: Vec<String> = set.iter().map(|i| i.name.clone()).collect();
    let sources = match (checkpoints.is_empty(), masks) {
        (false, None) => {
            let mut seen = std::collections::BTreeSet::new();
            let mut sources = Vec::new();
            for (i, part) in checkpoints.into_iter().enumerate() {
                let name = part.file_name.as_deref().map(upload::stem).unwrap_or_default();
                // An invalid name is not echoed: it may be anything, a patient's name included.
                super::models::validate_name(&name).map_err(|_| {
                    ApiError::Unprocessable(format!(
                        "checkpoint part #{}: its file name (without extension) is not a valid checkpoint \
                         name: use 1-100 letters, digits, '.', '_' or '-'",
                        i + 1
                    ))
                })?;
                if !seen.insert(name.clone()) {
                    return Err(ApiError::Unprocessable(format!("two checkpoints are named {name:?}")));
                }
                sources.push(Source::Model(name, part.data));
            }
            validate_checkpoints(state, model, &sources).await?;
            sources
        }
        (true, Some(zip)) => {
            let limits = state.limits.clone();
            let names = names.clone();
            let sources =
                super::blocking(move || masks_by_checkpoint(&zip.data, &names, &limits)).await??;
            validate_masks(state, &sources).await?;
            sources
        }
        (false, Some(_)) => {
            return Err(ApiError::Unprocessable(
                "send either checkpoint files or a masks zip, not both".into(),
            ))
        }
        (true, None) => {
            return Err(ApiError::Unprocessable(
                "send checkpoint files (part \"checkpoint\") or predicted masks (part \"masks\", a zip)".into(),
            ))
        }
    };
    if sources.len() < MIN_POINTS {
        return Err(ApiError::Unprocessable(format!(
            "{} checkpoints were sent; fitting and validating the mapping needs at least {MIN_POINTS}",
            sources.len()
        )));
    }
    let source_kind = match sources.first() {
        Some(Source::Masks(..)) => "masks",
        _ => "checkpoints",
    };
    let result = staged(state, async |staged: &mut Staged| {
        let items = stage_set(state, staged, &set).await?;
        let mut rows = Vec::with_capacity(sources.len());
        let mut mask_items = Vec::with_capacity(sources.len());
        for source in &sources {
            match source {
                Source::Model(name, bytes) => {
                    let sha = staged.put(&state.blobs, bytes.clone()).await?;
                    rows.push(CheckpointRow {
                        name: name.clone(),
                        onnx_sha256: Some(sha),
                        masks_set_id: None,
                    });
                    mask_items.push(None);
                }
                Source::Masks(name, masks) => {
                    let mut items = Vec::with_capacity(masks.len());
                    for (image, mask) in masks {
                        let sha = staged.put(&state.blobs, mask.clone()).await?;
                        items.push(Item {
                            name: image.clone(),
                            image_sha256: sha,
                            ..Item::default()
                        });
                    }
                    rows.push(CheckpointRow {
                        name: name.clone(),
                        onnx_sha256: None,
                        masks_set_id: None,
                    });
                    mask_items.push(Some(items));
                }
            }
        }
        let tx = staged.tx();
        let calibration_set_id = image_sets::insert(tx, SetKind::Calibration, &items).await?;
        let id = Uuid::new_v4();
        let new = NewCalibration {
            id,
            model_id: model.id,
            source: source_kind,
            params,
            reference_set_id: Some(reference_set_id),
            calibration_set_id: Some(calibration_set_id),
            activate,
            result: None,
        };
        calibrations::insert(tx, &new).await?;
        for (position, (mut row, masks)) in rows.into_iter().zip(mask_items).enumerate() {
            if let Some(masks) = masks {
                row.masks_set_id = Some(image_sets::insert(tx, SetKind::Masks, &masks).await?);
            }
            calibrations::insert_checkpoint(tx, id, position as i32, &row).await?;
        }
        queue::enqueue(tx, id, JobKind::Calibration, state.max_attempts).await?;
        if let Some((key, digest)) = idem {
            idempotency::record(tx, key, digest, id, None).await?;
        }
        Ok(id)
    })
    .await;
    match result {
        Err(e) if lost_key_race(&e) => {
            let (key, digest) = idem.unzip();
            Ok(race_winner(state, key, digest.unwrap_or_default())
                .await?
                .resource_id)
        }
        other => other,
    }
}

/// Every checkpoint must load and match the model's spec (the same check as at registration).
async fn validate_checkpoints(
    state: &AppState,
    model: &models::ModelRow,
    sources: &[Source],
) -> Result<(), ApiError> {
    let spec: ModelSpec = serde_json::from_value(model.spec.clone())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let runtime = state.runtime()?.clone();
    let models: Vec<(String, Bytes)> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Model(n, b) => Some((n.clone(), b.clone())),
            Source::Masks(..) => None,
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for (name, bytes) in &models {
            SegModel::load(&runtime, bytes, name, &spec)?;
        }
        Ok::<_, ApiError>(())
    })
    .await?
}

async fn validate_masks(state: &AppState, sources: &[Source]) -> Result<(), ApiError> {
    let max_pixels = state.limits.max_pixels;
    let masks: Vec<(String, Bytes)> = sources
        .iter()
        .flat_map(|s| match s {
            Source::Masks(cp, m) => m
                .iter()
                .map(|(n, b)| (format!("{cp}/{n}"), b.clone()))
                .collect(),
            Source::Model(..) => Vec::new(),
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        masks
            .par_iter()
            .try_for_each(|(n, b)| image_io::decode_label(b, n, max_pixels).map(drop))
    })
    .await?
    .map_err(Into::into)
}

/// Fits (pseudo, real) pairs now. The reverse segmenter recorded is the model's, so estimates (which
/// compare it) work; the caller vouches that the pseudo metrics came from it with these params.
async fn from_pairs(
    state: &AppState,
    model: &models::ModelRow,
    reference_set_id: Uuid,
    body: PairsRequest,
    key: Option<&ScopedKey>,
) -> Result<Uuid, ApiError> {
    // PostgreSQL cannot store NUL in text or jsonb: refused here rather than failing the insert (a 500).
    if let Some(p) = body.points.iter().find(|p| p.name.contains('\0')) {
        return Err(ApiError::Unprocessable(format!(
            "point name {:?} contains a NUL character",
            p.name
        )));
    }
    // The parsed body, re-serialised: retries that differ only in JSON formatting are the same request.
    let digest = sha256_hex(
        serde_json::to_string(&body)
            .map_err(|e| ApiError::Internal(format!("cannot serialise the request: {e}")))?
            .as_bytes(),
    );
    if let Some(first) = replay(state, key, &digest).await? {
        return Ok(first.resource_id);
    }
    let params = body.params.checked()?;
    let points: Vec<CheckpointPoint> = body
        .points
        .into_iter()
        .map(|p| {
            CheckpointPoint::from_pair(
                p.name,
                p.real.into(),
                match p.pseudo {
                    Some(pseudo) => PseudoOutcome::Ok {
                        pseudo: pseudo.into(),
                        per_repetition: vec![pseudo.into()],
                        support: SupportCount {
                            used: 0,
                            rejected: 0,
                        },
                    },
                    None => PseudoOutcome::InsufficientSupport {
                        support: SupportCount {
                            used: 0,
                            rejected: 0,
                        },
                    },
                },
            )
        })
        .collect();
    let reverse = reverse_description(state, model).await?;
    let fitted = Calibration::fit(reverse, params, 0, points)?;
    let id = Uuid::new_v4();
    let new = NewCalibration {
        id,
        model_id: model.id,
        source: "pairs",
        params,
        reference_set_id: Some(reference_set_id),
        calibration_set_id: None,
        activate: body.activate,
        result: Some(fitted),
    };
    let stored = async {
        let mut tx = state.pool.begin().await?;
        calibrations::insert(&mut tx, &new).await?;
        if body.activate {
            calibrations::activate_for(&mut tx, model.id, id).await?;
        }
        if let Some(key) = key {
            idempotency::record(&mut tx, key, &digest, id, None).await?;
        }
        tx.commit().await?;
        Ok::<_, store::StoreError>(())
    }
    .await
    .map_err(ApiError::from);
    match stored {
        Err(e) if lost_key_race(&e) => Ok(race_winner(state, key, &digest).await?.resource_id),
        Err(e) => Err(e),
        Ok(()) => Ok(id),
    }
}

async fn reverse_description(
    state: &AppState,
    model: &models::ModelRow,
) -> Result<String, ApiError> {
    let onnx = match model.reverse_segmenter_id {
        None => None,
        Some(rid) => {
            let row = models::get_reverse(&state.pool, rid)
                .await?
                .ok_or_else(|| ApiError::Internal(format!("reverse segmenter {rid} is missing")))?;
            let bytes = state.blobs.get(&row.onnx_sha256).await?;
            Some((row.onnx_sha256, bytes))
        }
    };
    let runtime = state.runtime()?.clone();
    let threshold = model.reverse_threshold;
    tokio::task::spawn_blocking(move || {
        crate::jobs::run::build_reverse(
            &runtime,
            onnx.as_ref().map(|(s, b)| (s.as_str(), b.as_ref())),
            threshold,
        )
        .map(|r| r.describe())
        .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?
}

/// A model's calibrations, newest first.
#[utoipa::path(get, path = "/v1/models/{id}/calibrations", operation_id = "listCalibrations", tag = "calibrations",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, body = CalibrationList),
        Unauthorized, NotFound, Busy,
    ))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<CalibrationList>, ApiError> {
    caller.require(Role::Reader)?;
    models::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model {id} does not exist")))?;
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
    responses(
        (status = 200, body = CalibrationView),
        Unauthorized, NotFound, Busy,
    ))]
async fn get_calibration(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<CalibrationView>, ApiError> {
    caller.require(Role::Reader)?;
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
async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<CalibrationView>, ApiError> {
    caller.require(Role::Admin)?;
    let row = calibrations::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("calibration {id} does not exist")))?;
    if row.result.is_none() {
        return Err(ApiError::Conflict(format!(
            "calibration {id} is {}; only a succeeded calibration can be activated",
            row.state
        )));
    }
    let mut tx = state.pool.begin().await.map_err(store::StoreError::from)?;
    calibrations::activate_for(&mut tx, row.model_id, id).await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    Ok(Json(view(&state, id).await?))
}
