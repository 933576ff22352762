//! Models, their reference sets, and reverse segmenters; the staging of image sets the other use cases
//! share.

use super::{blocking, cleanup, staged, AppError, Context};
use crate::inference::{ModelSpec, OnnxReverse, OnnxReverseParams, Reverse, SegModel};
use crate::ingest::expand::{self, InputFile, InputPair, NamedImage};
use crate::store::blobs::Staged;
use crate::store::image_sets::{self, Item, SetInfo, SetKind};
use crate::store::models::{self, ModelRow, ReverseRow};
use bytes::Bytes;
use uuid::Uuid;

/// Names of models, reverse segmenters and checkpoints: 1-100 letters, digits, '.', '_' or '-'.
pub fn validate_name(name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AppError::InvalidInput(format!(
            "name {name:?} is invalid: use 1-100 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// The model, or [`AppError::NotFound`].
pub async fn get(ctx: &Context, id: Uuid) -> Result<ModelRow, AppError> {
    super::existing(models::get(&ctx.pool, id).await?, "model", id)
}

/// The reverse segmenter, or [`AppError::NotFound`].
pub async fn get_reverse(ctx: &Context, id: Uuid) -> Result<ReverseRow, AppError> {
    super::existing(
        models::get_reverse(&ctx.pool, id).await?,
        "reverse segmenter",
        id,
    )
}

/// A registered ONNX reverse segmenter and the threshold that binarises its output.
pub struct OnnxReverseChoice {
    pub id: Uuid,
    pub threshold: f32,
}

/// A model to register, parsed from the request but not yet checked.
pub struct NewModel {
    pub name: String,
    pub spec_text: String,
    pub onnx: Bytes,
    /// None: the built-in label fusion.
    pub reverse: Option<OnnxReverseChoice>,
}

/// Registers a model once its ONNX file loads and matches its spec.
pub async fn register(ctx: &Context, new: NewModel) -> Result<ModelRow, AppError> {
    validate_name(&new.name)?;
    let spec = ModelSpec::parse(&new.spec_text)?;
    let (reverse_id, threshold) = match &new.reverse {
        None => (None, None),
        Some(OnnxReverseChoice { id, threshold }) => {
            let row = models::get_reverse(&ctx.pool, *id).await?.ok_or_else(|| {
                AppError::InvalidInput(format!("reverse segmenter {id} is not registered"))
            })?;
            Reverse::onnx(&row.onnx_sha256, *threshold)
                .map_err(|e| AppError::InvalidInput(format!("reverse: {e}")))?;
            (Some(*id), Some(*threshold))
        }
    };
    let runtime = ctx.runtime()?.clone();
    let (bytes, spec_check, name_check) = (new.onnx.clone(), spec.clone(), new.name.clone());
    blocking(move || SegModel::load(&runtime, &bytes, &name_check, &spec_check).map(drop))
        .await??;
    let spec_json = serde_json::to_value(&spec)?;
    let (name, onnx) = (&new.name, &new.onnx);
    let id = staged(ctx, async |staged: &mut Staged| {
        let sha = staged.put(&ctx.blobs, onnx.clone()).await?;
        let row = models::NewModel {
            name,
            spec: spec_json,
            onnx_sha256: &sha,
            onnx_size: onnx.len() as i64,
            reverse_segmenter_id: reverse_id,
            onnx_threshold: threshold,
        };
        models::insert(staged.tx(), row)
            .await
            .map_err(|e| match e.unique_violation() {
                Some(_) => {
                    AppError::AlreadyExists(format!("a model named {name:?} already exists"))
                }
                None => e.into(),
            })
    })
    .await?;
    get(ctx, id).await
}

/// Deletes a model with its reference set, calibrations and estimates.
pub async fn delete(ctx: &Context, id: Uuid) -> Result<(), AppError> {
    let mut tx = ctx
        .pool
        .begin()
        .await
        .map_err(crate::store::StoreError::from)?;
    let garbage = super::existing(models::delete(&mut tx, id).await?, "model", id)?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    cleanup(ctx, &garbage).await;
    Ok(())
}

/// A reference set as stored: its row and its image names in set order.
pub struct ReferenceSetInfo {
    pub info: SetInfo,
    pub names: Vec<String>,
}

/// Attaches (or replaces) the model's reference set; the replaced set goes once nothing uses it.
pub async fn put_reference(
    ctx: &Context,
    id: Uuid,
    pairs: Vec<InputPair>,
    axis: Option<usize>,
) -> Result<ReferenceSetInfo, AppError> {
    get(ctx, id).await?;
    let min_area = crate::engine::spe::SpeParams::default().min_area;
    let set = prepare_labelled(ctx, pairs, axis, min_area, "the reference set").await?;
    let (set_id, garbage) = staged(ctx, async |staged: &mut Staged| {
        let items = stage_set(ctx, staged, &set).await?;
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
    cleanup(ctx, &garbage).await;
    reference_set(ctx, set_id).await
}

/// The model's current reference set.
pub async fn reference(ctx: &Context, id: Uuid) -> Result<ReferenceSetInfo, AppError> {
    let set_id = get(ctx, id).await?.reference_set_id.ok_or_else(|| {
        AppError::NotFound(format!(
            "model {id} has no reference set yet; PUT one first"
        ))
    })?;
    reference_set(ctx, set_id).await
}

async fn reference_set(ctx: &Context, set_id: Uuid) -> Result<ReferenceSetInfo, AppError> {
    let info = image_sets::info(&ctx.pool, set_id)
        .await?
        .ok_or_else(|| AppError::NotFound("the reference set was replaced meanwhile".into()))?;
    let names = image_sets::items(&ctx.pool, set_id)
        .await?
        .into_iter()
        .map(|i| i.name)
        .collect();
    Ok(ReferenceSetInfo { info, names })
}

/// Registers a UniverSeg-contract ONNX model as a reverse segmenter once it loads as one.
pub async fn register_reverse(
    ctx: &Context,
    name: String,
    onnx: Bytes,
) -> Result<ReverseRow, AppError> {
    validate_name(&name)?;
    let runtime = ctx.runtime()?.clone();
    let (bytes, check_name) = (onnx.clone(), name.clone());
    blocking(move || {
        OnnxReverse::load(&runtime, &bytes, &check_name, OnnxReverseParams::default()).map(drop)
    })
    .await??;
    let id = staged(ctx, async |staged: &mut Staged| {
        let sha = staged.put(&ctx.blobs, onnx.clone()).await?;
        models::insert_reverse(staged.tx(), &name, &sha, onnx.len() as i64)
            .await
            .map_err(|e| match e.unique_violation() {
                Some(_) => AppError::AlreadyExists(format!(
                    "a reverse segmenter named {name:?} already exists"
                )),
                None => e.into(),
            })
    })
    .await?;
    get_reverse(ctx, id).await
}

/// Writes a validated set's files to the blob store and returns its rows (not yet inserted).
pub async fn stage_set(
    ctx: &Context,
    staged: &mut Staged,
    set: &[NamedImage],
) -> Result<Vec<Item>, AppError> {
    let mut items = Vec::with_capacity(set.len());
    for item in set {
        let image_sha256 = staged.put(&ctx.blobs, item.image.clone()).await?;
        let label_sha256 = match &item.label {
            Some(label) => Some(staged.put(&ctx.blobs, label.clone()).await?),
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

/// The decoding limits of one request.
pub fn expand_options(
    ctx: &Context,
    axis: Option<usize>,
    min_label_area: usize,
) -> expand::Options {
    expand::Options {
        max_pixels: ctx.limits.max_pixels,
        max_images: ctx.limits.max_images,
        max_volume_voxels: ctx.limits.max_volume_voxels,
        axis,
        min_label_area,
        max_request_pixels: ctx.limits.max_request_pixels,
    }
}

/// Decodes an unlabelled set off the async runtime (DICOM frames and NIfTI slices become images); any
/// unreadable or oversized file fails the request.
pub async fn prepare_unlabelled(
    ctx: &Context,
    files: Vec<InputFile>,
    axis: Option<usize>,
    what: &'static str,
) -> Result<Vec<NamedImage>, AppError> {
    let opts = expand_options(ctx, axis, 0);
    Ok(blocking(move || expand::unlabelled(&files, &opts, what)).await??)
}

/// [`prepare_unlabelled`] for image-label pairs; slices of labelled volumes with fewer than
/// `min_label_area` label pixels are left out.
pub async fn prepare_labelled(
    ctx: &Context,
    pairs: Vec<InputPair>,
    axis: Option<usize>,
    min_label_area: usize,
    what: &'static str,
) -> Result<Vec<NamedImage>, AppError> {
    let opts = expand_options(ctx, axis, min_label_area);
    Ok(blocking(move || expand::labelled(&pairs, &opts, what)).await??)
}
