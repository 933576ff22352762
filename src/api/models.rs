//! /v1/models (registration, reference sets) and /v1/reverse-segmenters.

use super::auth::Caller;
use super::dto::{
    Model, ModelList, ReferenceSet, ReverseSegmenter, ReverseSegmenterList, ReverseSpec,
};
use super::error::Problem;
use super::forms::{LabelledSetForm, RegisterModelForm, RegisterReverseForm};
use super::problems::{Busy, Forbidden, NotFound, Unauthorized, Uploads};
use super::upload::{self, Upload};
use super::{staged, ApiError, AppState, IdPath};
use crate::inference::{ModelSpec, OnnxReverse, OnnxReverseParams, SegModel};
use crate::ingest::expand::{self, InputFile, InputPair, NamedImage};
use crate::store::blobs::Staged;
use crate::store::image_sets::{self, Item, SetKind};
use crate::store::keys::Role;
use crate::store::{self, models};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(get_model, delete_model))
        .routes(routes!(put_reference, get_reference))
        .routes(routes!(register_reverse, list_reverse))
        .routes(routes!(get_reverse))
}

pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(format!(
            "name {name:?} is invalid: use 1-100 letters, digits, '.', '_' or '-'"
        )))
    }
}

fn created(location: String) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = location.parse() {
        headers.insert(header::LOCATION, v);
    }
    headers
}

async fn model_or_404(state: &AppState, id: Uuid) -> Result<models::ModelRow, ApiError> {
    models::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model {id} does not exist")))
}

/// Register a segmentation model: the ONNX file and its spec, validated against each other now.
#[utoipa::path(post, path = "/v1/models", operation_id = "registerModel", tag = "models",
    request_body(content = RegisterModelForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Registered", body = Model, headers(("Location" = String))),
        Unauthorized, Forbidden, Uploads, Busy,
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad spec, bad ONNX, or spec/model mismatch", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "ONNX Runtime unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, HeaderMap, Json<Model>), ApiError> {
    caller.require(Role::Admin)?;
    let mut form = Upload::read(multipart?, &["name", "spec", "onnx", "reverse"]).await?;
    let name = form
        .take_text("name")?
        .ok_or_else(|| ApiError::Unprocessable("missing form part \"name\"".into()))?;
    validate_name(&name)?;
    let spec_text = form.take_text("spec")?.ok_or_else(|| {
        ApiError::Unprocessable("missing form part \"spec\" (the model spec JSON)".into())
    })?;
    let spec = ModelSpec::parse(&spec_text)?;
    let onnx = form.require("onnx", "the ONNX model file")?.data;
    let reverse: ReverseSpec = match form.take_text("reverse")? {
        None => ReverseSpec::LabelFusion,
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            ApiError::Unprocessable(format!("form part \"reverse\" is invalid: {e}"))
        })?,
    };
    let (reverse_id, threshold) = match &reverse {
        ReverseSpec::LabelFusion => (None, 0.4),
        ReverseSpec::Onnx { id, threshold } => {
            if !(*threshold > 0.0 && *threshold < 1.0) {
                return Err(ApiError::Unprocessable(
                    "reverse.threshold must be strictly between 0 and 1".into(),
                ));
            }
            if models::get_reverse(&state.pool, *id).await?.is_none() {
                return Err(ApiError::Unprocessable(format!(
                    "reverse segmenter {id} is not registered"
                )));
            }
            (Some(*id), *threshold)
        }
    };
    let runtime = state.runtime()?.clone();
    let (bytes, spec_check, name_check) = (onnx.clone(), spec.clone(), name.clone());
    tokio::task::spawn_blocking(move || {
        SegModel::load(&runtime, &bytes, &name_check, &spec_check).map(drop)
    })
    .await??;
    let spec_json = serde_json::to_value(&spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let id = staged(&state, async |staged: &mut Staged| {
        let sha = staged.put(&state.blobs, onnx.clone()).await?;
        let tx = staged.tx();
        let new = models::NewModel {
            name: &name,
            spec: spec_json,
            onnx_sha256: &sha,
            onnx_size: onnx.len() as i64,
            reverse_segmenter_id: reverse_id,
            reverse_threshold: threshold,
        };
        let id = models::insert(tx, new)
            .await
            .map_err(|e| match e.unique_violation() {
                Some(_) => ApiError::Conflict(format!("a model named {name:?} already exists")),
                None => e.into(),
            })?;
        Ok(id)
    })
    .await?;
    let model = model_or_404(&state, id).await?;
    Ok((
        StatusCode::CREATED,
        created(format!("/v1/models/{id}")),
        Json(model.into()),
    ))
}

/// List registered models.
#[utoipa::path(get, path = "/v1/models", operation_id = "listModels", tag = "models",
    responses(
        (status = 200, body = ModelList),
        Unauthorized, Busy,
    ))]
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<ModelList>, ApiError> {
    caller.require(Role::Reader)?;
    let items = models::list(&state.pool)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(ModelList { items }))
}

/// One model.
#[utoipa::path(get, path = "/v1/models/{id}", operation_id = "getModel", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, body = Model),
        Unauthorized, NotFound, Busy,
    ))]
async fn get_model(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Model>, ApiError> {
    caller.require(Role::Reader)?;
    Ok(Json(model_or_404(&state, id).await?.into()))
}

/// Delete a model with its reference set, calibrations and estimates.
#[utoipa::path(delete, path = "/v1/models/{id}", operation_id = "deleteModel", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized, Forbidden, NotFound, Busy,
    ))]
async fn delete_model(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let mut tx = state.pool.begin().await.map_err(store::StoreError::from)?;
    let garbage = models::delete(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model {id} does not exist")))?;
    tx.commit().await.map_err(store::StoreError::from)?;
    super::cleanup(&state, &garbage).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Writes a validated set's files to the blob store and returns its rows (not yet inserted).
pub(crate) async fn stage_set(
    state: &AppState,
    staged: &mut Staged,
    set: &[NamedImage],
) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::with_capacity(set.len());
    for item in set {
        let image_sha256 = staged.put(&state.blobs, item.image.clone()).await?;
        let label_sha256 = match &item.label {
            Some(label) => Some(staged.put(&state.blobs, label.clone()).await?),
            None => None,
        };
        items.push(Item {
            name: item.name.clone(),
            image_sha256,
            label_sha256,
            source_sha256: Some(item.source_sha256.clone()),
            source_format: Some(item.source_format.as_str().to_string()),
            source_index: item.source_index.map(|i| i as i32),
            pixel_row_mm: item.pixel_mm.map(|p| p[0]),
            pixel_col_mm: item.pixel_mm.map(|p| p[1]),
        });
    }
    Ok(items)
}

pub(crate) fn expand_options(
    state: &AppState,
    axis: Option<usize>,
    min_label_area: usize,
) -> expand::Options {
    expand::Options {
        max_pixels: state.limits.max_pixels,
        max_images: state.limits.max_images,
        max_volume_voxels: state.limits.max_volume_voxels,
        axis,
        min_label_area,
        max_request_pixels: state.limits.max_request_pixels,
    }
}

/// Decodes an unlabelled set off the async runtime (DICOM frames and NIfTI slices become images); any
/// unreadable or oversized file fails the request.
pub(crate) async fn prepare_unlabelled(
    state: &AppState,
    files: Vec<InputFile>,
    axis: Option<usize>,
    what: &'static str,
) -> Result<Vec<NamedImage>, ApiError> {
    let opts = expand_options(state, axis, 0);
    tokio::task::spawn_blocking(move || expand::unlabelled(&files, &opts, what))
        .await?
        .map_err(ApiError::from)
}

/// [`prepare_unlabelled`] for image-label pairs; slices of labelled volumes with fewer than
/// `min_label_area` label pixels are left out.
pub(crate) async fn prepare_labelled(
    state: &AppState,
    pairs: Vec<InputPair>,
    axis: Option<usize>,
    min_label_area: usize,
    what: &'static str,
) -> Result<Vec<NamedImage>, ApiError> {
    let opts = expand_options(state, axis, min_label_area);
    tokio::task::spawn_blocking(move || expand::labelled(&pairs, &opts, what))
        .await?
        .map_err(ApiError::from)
}

/// Attach (or replace) the model's reference set: its labelled training images. Later calibrations use
/// it; existing calibrations keep the set they were made with.
#[utoipa::path(put, path = "/v1/models/{id}/reference-set", operation_id = "putReferenceSet", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    request_body(content = LabelledSetForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = ReferenceSet),
        Unauthorized, Forbidden, NotFound, Uploads, Busy,
        (status = 422, description = "Unreadable image, missing label, empty set", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_reference(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<ReferenceSet>, ApiError> {
    caller.require(Role::Admin)?;
    model_or_404(&state, id).await?;
    let mut form = Upload::read(multipart?, &["image", "label", "archive", "axis"]).await?;
    let axis = form.take_axis()?;
    let limits = state.limits.clone();
    let pairs = super::blocking(move || upload::labelled(&mut form, &limits, "the reference set"))
        .await??;
    let min_area = crate::engine::spe::SpeParams::default().min_area;
    let set = prepare_labelled(&state, pairs, axis, min_area, "the reference set").await?;
    let (set_id, garbage) = staged(&state, async |staged: &mut Staged| {
        let items = stage_set(&state, staged, &set).await?;
        let tx = staged.tx();
        let set_id = image_sets::insert(tx, SetKind::Reference, &items).await?;
        let previous = models::set_reference(tx, id, set_id).await?;
        let garbage = match previous {
            Some(prev) => image_sets::delete_unused(tx, &[prev]).await?,
            None => Vec::new(),
        };
        Ok((set_id, garbage))
    })
    .await?;
    super::cleanup(&state, &garbage).await;
    reference_view(&state, set_id).await.map(Json)
}

async fn reference_view(state: &AppState, set_id: Uuid) -> Result<ReferenceSet, ApiError> {
    let info = image_sets::info(&state.pool, set_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("the reference set was replaced meanwhile".into()))?;
    let names = image_sets::items(&state.pool, set_id)
        .await?
        .into_iter()
        .map(|i| i.name)
        .collect::<Vec<_>>();
    Ok(ReferenceSet {
        id: info.id,
        images: names.len(),
        names,
        created_at: info.created_at,
    })
}

/// The model's current reference set.
#[utoipa::path(get, path = "/v1/models/{id}/reference-set", operation_id = "getReferenceSet", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, body = ReferenceSet),
        Unauthorized, Busy,
        (status = 404, description = "No such model, or no reference set yet", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_reference(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<ReferenceSet>, ApiError> {
    caller.require(Role::Reader)?;
    let model = model_or_404(&state, id).await?;
    let set_id = model.reference_set_id.ok_or_else(|| {
        ApiError::NotFound(format!(
            "model {id} has no reference set yet; PUT one first"
        ))
    })?;
    reference_view(&state, set_id).await.map(Json)
}

/// Register a UniverSeg-contract ONNX model as a reverse segmenter (validated against the contract now).
#[utoipa::path(post, path = "/v1/reverse-segmenters", operation_id = "registerReverseSegmenter", tag = "reverse-segmenters",
    request_body(content = RegisterReverseForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, body = ReverseSegmenter, headers(("Location" = String))),
        Unauthorized, Forbidden, Uploads, Busy,
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an ONNX model or not the UniverSeg contract", body = Problem, content_type = "application/problem+json"),
    ))]
async fn register_reverse(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, HeaderMap, Json<ReverseSegmenter>), ApiError> {
    caller.require(Role::Admin)?;
    let mut form = Upload::read(multipart?, &["name", "onnx"]).await?;
    let name = form
        .take_text("name")?
        .ok_or_else(|| ApiError::Unprocessable("missing form part \"name\"".into()))?;
    validate_name(&name)?;
    let onnx = form
        .require("onnx", "the UniverSeg-contract ONNX file")?
        .data;
    let runtime = state.runtime()?.clone();
    let (bytes, check_name) = (onnx.clone(), name.clone());
    tokio::task::spawn_blocking(move || {
        OnnxReverse::load(&runtime, &bytes, &check_name, OnnxReverseParams::default()).map(drop)
    })
    .await??;
    let id = staged(&state, async |staged: &mut Staged| {
        let sha = staged.put(&state.blobs, onnx.clone()).await?;
        let tx = staged.tx();
        let id = models::insert_reverse(tx, &name, &sha, onnx.len() as i64)
            .await
            .map_err(|e| match e.unique_violation() {
                Some(_) => {
                    ApiError::Conflict(format!("a reverse segmenter named {name:?} already exists"))
                }
                None => e.into(),
            })?;
        Ok(id)
    })
    .await?;
    let row = models::get_reverse(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::Internal("reverse segmenter vanished".into()))?;
    Ok((
        StatusCode::CREATED,
        created(format!("/v1/reverse-segmenters/{id}")),
        Json(row.into()),
    ))
}

/// List registered reverse segmenters.
#[utoipa::path(get, path = "/v1/reverse-segmenters", operation_id = "listReverseSegmenters", tag = "reverse-segmenters",
    responses(
        (status = 200, body = ReverseSegmenterList),
        Unauthorized, Busy,
    ))]
async fn list_reverse(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ReverseSegmenterList>, ApiError> {
    caller.require(Role::Reader)?;
    let items = models::list_reverse(&state.pool)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(ReverseSegmenterList { items }))
}

/// One reverse segmenter.
#[utoipa::path(get, path = "/v1/reverse-segmenters/{id}", operation_id = "getReverseSegmenter", tag = "reverse-segmenters",
    params(("id" = Uuid, Path, description = "Reverse segmenter id")),
    responses(
        (status = 200, body = ReverseSegmenter),
        Unauthorized, NotFound, Busy,
    ))]
async fn get_reverse(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<ReverseSegmenter>, ApiError> {
    caller.require(Role::Reader)?;
    let row = models::get_reverse(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("reverse segmenter {id} does not exist")))?;
    Ok(Json(row.into()))
}
