//! /v1/models (registration, reference sets) and /v1/reverse-segmenters.

use super::auth::{Admin, Reader};
use super::dto::{
    Model, ModelList, ReferenceSet, ReverseSegmenter, ReverseSegmenterList, ReverseSpec,
};
use super::error::Problem;
use super::forms::{
    LabelledSetForm, RegisterModelForm, RegisterReverseForm, Thresholds as ThresholdsForm,
};
use super::problems::{Busy, Forbidden, JsonBody, NotFound, Unauthorized, Uploads};
use super::upload::{self, Upload};
use super::{ApiError, AppState, IdPath};
use crate::app::models::{self as app, NewModel, OnnxReverseChoice, ReferenceSetInfo};
use crate::app::{thresholds, windows};
use crate::monitor::Thresholds;
use crate::store::models;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::JsonRejection;
use axum::extract::Multipart;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(get_model, delete_model))
        .routes(routes!(put_reference, get_reference))
        .routes(routes!(register_reverse, list_reverse))
        .routes(routes!(get_reverse))
        .routes(routes!(get_thresholds, put_thresholds))
        .routes(routes!(get_window, put_window))
}

fn created(location: String) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = location.parse() {
        headers.insert(header::LOCATION, v);
    }
    headers
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
    state: Admin,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, HeaderMap, Json<Model>), ApiError> {
    let mut form = Upload::read(multipart?, &["name", "spec", "onnx", "reverse"]).await?;
    let new = NewModel {
        name: form
            .take_text("name")?
            .ok_or_else(|| ApiError::Unprocessable("missing form part \"name\"".into()))?,
        spec_text: form.take_text("spec")?.ok_or_else(|| {
            ApiError::Unprocessable("missing form part \"spec\" (the model spec JSON)".into())
        })?,
        onnx: form.require("onnx", "the ONNX model file")?.data,
        reverse: match form.take_text("reverse")? {
            None => None,
            Some(text) => match serde_json::from_str(&text).map_err(|e| {
                ApiError::Unprocessable(format!("form part \"reverse\" is invalid: {e}"))
            })? {
                ReverseSpec::LabelFusion => None,
                ReverseSpec::Onnx { id, threshold } => Some(OnnxReverseChoice { id, threshold }),
            },
        },
    };
    let model = app::register(&state, new).await?;
    Ok((
        StatusCode::CREATED,
        created(format!("/v1/models/{}", model.id)),
        Json(model.into()),
    ))
}

/// List registered models.
#[utoipa::path(get, path = "/v1/models", operation_id = "listModels", tag = "models",
    responses((status = 200, body = ModelList), Unauthorized, Busy))]
async fn list(state: Reader) -> Result<Json<ModelList>, ApiError> {
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
    responses((status = 200, body = Model), Unauthorized, NotFound, Busy))]
async fn get_model(state: Reader, IdPath(id): IdPath) -> Result<Json<Model>, ApiError> {
    Ok(Json(app::get(&state, id).await?.into()))
}

/// Delete a model with its reference set, calibrations and estimates.
#[utoipa::path(delete, path = "/v1/models/{id}", operation_id = "deleteModel", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses((status = 204, description = "Deleted"), Unauthorized, Forbidden, NotFound, Busy))]
async fn delete_model(state: Admin, IdPath(id): IdPath) -> Result<StatusCode, ApiError> {
    app::delete(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
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
    state: Admin,
    IdPath(id): IdPath,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<ReferenceSet>, ApiError> {
    app::get(&state, id).await?;
    let mut form = Upload::read(multipart?, &["image", "label", "archive", "axis"]).await?;
    let axis = form.take_axis()?;
    let limits = state.limits.clone();
    let pairs =
        crate::app::blocking(move || upload::labelled(&mut form, &limits, "the reference set"))
            .await??;
    Ok(Json(reference_view(
        app::put_reference(&state, id, pairs, axis).await?,
    )))
}

fn reference_view(set: ReferenceSetInfo) -> ReferenceSet {
    ReferenceSet {
        id: set.info.id,
        images: set.names.len(),
        names: set.names,
        created_at: set.info.created_at,
    }
}

/// The model's current reference set.
#[utoipa::path(get, path = "/v1/models/{id}/reference-set", operation_id = "getReferenceSet", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, body = ReferenceSet),
        Unauthorized, Busy,
        (status = 404, description = "No such model, or no reference set yet", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_reference(state: Reader, IdPath(id): IdPath) -> Result<Json<ReferenceSet>, ApiError> {
    Ok(Json(reference_view(app::reference(&state, id).await?)))
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
    state: Admin,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, HeaderMap, Json<ReverseSegmenter>), ApiError> {
    let mut form = Upload::read(multipart?, &["name", "onnx"]).await?;
    let name = form
        .take_text("name")?
        .ok_or_else(|| ApiError::Unprocessable("missing form part \"name\"".into()))?;
    let onnx = form
        .require("onnx", "the UniverSeg-contract ONNX file")?
        .data;
    let row = app::register_reverse(&state, name, onnx).await?;
    Ok((
        StatusCode::CREATED,
        created(format!("/v1/reverse-segmenters/{}", row.id)),
        Json(row.into()),
    ))
}

/// List registered reverse segmenters.
#[utoipa::path(get, path = "/v1/reverse-segmenters", operation_id = "listReverseSegmenters", tag = "reverse-segmenters",
    responses((status = 200, body = ReverseSegmenterList), Unauthorized, Busy))]
async fn list_reverse(state: Reader) -> Result<Json<ReverseSegmenterList>, ApiError> {
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
    responses((status = 200, body = ReverseSegmenter), Unauthorized, NotFound, Busy))]
async fn get_reverse(
    state: Reader,
    IdPath(id): IdPath,
) -> Result<Json<ReverseSegmenter>, ApiError> {
    Ok(Json(app::get_reverse(&state, id).await?.into()))
}

/// The model's alert thresholds, per metric: `min` / `max`, or relative to the deployed model's real value
/// on the active calibration's split (`below_calibration` / `above_calibration`). `{}` when none are set.
#[utoipa::path(get, path = "/v1/models/{id}/thresholds", operation_id = "getThresholds", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses((status = 200, body = ThresholdsForm), Unauthorized, NotFound, Busy))]
async fn get_thresholds(state: Reader, IdPath(id): IdPath) -> Result<Json<Thresholds>, ApiError> {
    Ok(Json(thresholds::get(&state, id).await?))
}

/// Replace the model's alert thresholds (`{}` removes them), e.g. `{"dice": {"min": 0.85}, "hd95": {"max":
/// 12}}` or `{"dice": {"below_calibration": 0.05}}`. Each later estimate carries the alerts it raises;
/// stored estimates keep theirs.
#[utoipa::path(put, path = "/v1/models/{id}/thresholds", operation_id = "putThresholds", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    request_body = ThresholdsForm,
    responses(
        (status = 200, body = ThresholdsForm),
        Unauthorized, Forbidden, NotFound, JsonBody, Busy,
        (status = 422, description = "Unknown metric or field, a bound out of range, or a relative rule without a calibration value", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_thresholds(
    state: Admin,
    IdPath(id): IdPath,
    body: Result<Json<Thresholds>, JsonRejection>,
) -> Result<Json<Thresholds>, ApiError> {
    Ok(Json(thresholds::set(&state, id, body?.0).await?))
}

/// A rolling window's size: `{"images": N}`, or `{"images": null}` to remove it.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowForm {
    /// Images per window estimate (1 to the per-upload image limit, at most 1024); null removes the window.
    /// Required: `{}` is refused rather than read as null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 1024, example = 24)]
    images: Option<Option<i32>>,
}

/// A field that is there, null or not (serde reads a missing `Option<Option<_>>` as None only with this).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    <Option<i32> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A model's rolling window.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Window {
    /// Images per window estimate; null when the model has no window.
    images: Option<i32>,
    /// Images received since the last window estimate (the next one is due when this reaches `images`).
    pending: i32,
    /// Images the window holds now (their pixels are kept until they leave it).
    held: i64,
}

impl From<crate::store::windows::WindowState> for Window {
    fn from(w: crate::store::windows::WindowState) -> Self {
        Window {
            images: w.images,
            pending: w.pending,
            held: w.held,
        }
    }
}

/// The model's rolling window: its size, and how many images it holds and has received since its last
/// estimate.
#[utoipa::path(get, path = "/v1/models/{id}/window", operation_id = "getWindow", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses((status = 200, body = Window), Unauthorized, NotFound, Busy))]
async fn get_window(state: Reader, IdPath(id): IdPath) -> Result<Json<Window>, ApiError> {
    Ok(Json(windows::get(&state, id).await?.into()))
}

/// Keep a rolling window of the model's latest N batch images: every batch posted afterwards adds its
/// images, and each time N new images have arrived since the last window estimate, the latest N are
/// estimated together (`kind: "window"` in the estimate list). For integrations that post one study at a
/// time. Window images keep their pixels until they leave the window; `{"images": null}` removes the
/// window and frees them.
#[utoipa::path(put, path = "/v1/models/{id}/window", operation_id = "putWindow", tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    request_body = WindowForm,
    responses(
        (status = 200, body = Window),
        Unauthorized, Forbidden, NotFound, JsonBody, Busy,
        (status = 422, description = "A size out of range", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_window(
    state: Admin,
    IdPath(id): IdPath,
    body: Result<Json<WindowForm>, JsonRejection>,
) -> Result<Json<Window>, ApiError> {
    let images = body?.0.images.ok_or_else(|| {
        ApiError::Unprocessable(
            "missing field \"images\": give the window size, or null to remove the window".into(),
        )
    })?;
    Ok(Json(windows::set(&state, id, images).await?.into()))
}
