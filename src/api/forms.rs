//! The multipart/form-data bodies (and the thresholds' JSON) as the OpenAPI document describes them. Handlers read the parts
//! themselves (`upload::Upload`); these types only document the parts, so they are never built.
//!
//! `serde(deny_unknown_fields)` is read by utoipa (additionalProperties: false): handlers refuse parts
//! they do not know.
#![expect(
    dead_code,
    reason = "documents multipart forms for OpenAPI; never built"
)]

use super::dto::{Params, ReverseSpec};
use crate::inference::ModelSpec;
use crate::monitor::Rule;
use utoipa::ToSchema;

/// multipart/form-data body of POST /v1/models; no other part is accepted.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterModelForm {
    /// Unique name: letters, digits, `.`, `_`, `-` (at most 100).
    #[schema(pattern = r"^[A-Za-z0-9._-]+$", min_length = 1, max_length = 100)]
    name: String,
    /// The model spec (a JSON part), e.g.
    /// {"input":{"name":"image","channels":1,"scale":"unit"},"output":{"name":"logits","kind":"argmax","foreground_class":1}}.
    spec: ModelSpec,
    /// The ONNX model.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    onnx: String,
    /// The reverse segmenter (a JSON part): {"kind":"label_fusion"} (the default) or
    /// {"kind":"onnx","id":"<uuid>","threshold":0.4} (a registered one).
    #[schema(value_type = ReverseSpec, required = false)]
    reverse: Option<ReverseSpec>,
}

/// multipart/form-data body carrying a labelled image set: `image` and `label` parts paired by file name,
/// and/or `archive` zips with images/ and labels/ folders; at least one image in all.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelledSetForm {
    /// Images (PNG, JPEG, DICOM, NIfTI; repeat the part); paired with labels by file name.
    #[schema(format = Binary, required = false)]
    image: Vec<String>,
    /// Label masks, 0/255 (foreground > 127), one per image, with the image's file name.
    #[schema(format = Binary, required = false)]
    label: Vec<String>,
    /// Or: zip archives with images/ and labels/ folders.
    #[schema(format = Binary, required = false)]
    archive: Vec<String>,
    /// The NIfTI axis volumes are sliced along (default the last).
    #[schema(value_type = u8, minimum = 0, maximum = 2, required = false)]
    axis: Option<u8>,
}

/// multipart/form-data body of POST /v1/reverse-segmenters.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterReverseForm {
    /// Unique name: letters, digits, `.`, `_`, `-` (at most 100).
    #[schema(pattern = r"^[A-Za-z0-9._-]+$", min_length = 1, max_length = 100)]
    name: String,
    /// A UniverSeg-contract ONNX model.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    onnx: String,
}

/// multipart/form-data body of a calibration job: `checkpoint` files (at least 3) or a `masks` zip, not
/// both, plus the labelled calibration set (`image` + `label` parts and/or `archive` zips).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibrationForm {
    /// Checkpoint ONNX files (repeat the part; name = file name without extension, letters, digits, `.`,
    /// `_`, `-`, unique). They must match the model's spec. At least 3.
    #[schema(format = Binary, required = false, min_items = 3)]
    checkpoint: Vec<String>,
    /// Or: a zip of predicted masks, `<checkpoint>/<image name>.png` (0/255), one folder per checkpoint,
    /// one mask per calibration image.
    #[schema(format = Binary, required = false)]
    masks: String,
    /// Calibration images (the held-out labelled split); paired with labels by file name.
    #[schema(format = Binary, required = false)]
    image: Vec<String>,
    /// Label masks, 0/255, one per image, with the image's file name.
    #[schema(format = Binary, required = false)]
    label: Vec<String>,
    /// Or: zip archives with images/ and labels/ folders.
    #[schema(format = Binary, required = false)]
    archive: Vec<String>,
    /// Protocol parameters (a JSON part), e.g. {"support_size":64,"repetitions":6,"min_area":20,"seed":0}.
    #[schema(value_type = Params, required = false)]
    params: Option<Params>,
    /// "false" to keep the current active calibration (default "true").
    #[schema(value_type = ActivateFlag, required = false)]
    activate: Option<String>,
    /// The NIfTI axis volumes are sliced along (default the last).
    #[schema(value_type = u8, minimum = 0, maximum = 2, required = false)]
    axis: Option<u8>,
}

/// A form part that is "true" or "false".
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActivateFlag {
    True,
    False,
}

/// multipart/form-data body of POST /v1/models/{id}/estimates: `image` parts and/or `archive` zips, at
/// least one image in all.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchForm {
    /// Unlabeled images: PNG, JPEG, DICOM or NIfTI (repeat the part).
    #[schema(format = Binary, required = false)]
    image: Vec<String>,
    /// Or: zip archives of images.
    #[schema(format = Binary, required = false)]
    archive: Vec<String>,
    /// The NIfTI axis volumes are sliced along (default the last).
    #[schema(value_type = u8, minimum = 0, maximum = 2, required = false)]
    axis: Option<u8>,
}

/// The rules between parts that a property list cannot say, added to the form schemas once the document
/// is assembled: which parts are alternatives, and that a set needs an image part or an archive.
/// (JSON Schema `allOf` of `anyOf`/`oneOf` clauses over `required`, one key per schema so that the
/// document is the same on every run. Not `minItems` on the repeated parts: an empty list is no part
/// at all in multipart.)
pub(crate) fn declare_part_rules(doc: &mut utoipa::openapi::OpenApi) {
    use serde_json::json;
    let images = json!({"anyOf": [{"required": ["image"]}, {"required": ["archive"]}]});
    let rules = [
        ("LabelledSetForm", vec![images.clone()]),
        ("BatchForm", vec![images.clone()]),
        (
            "CalibrationForm",
            vec![
                json!({"oneOf": [{"required": ["checkpoint"]}, {"required": ["masks"]}]}),
                images,
            ],
        ),
    ];
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (form, clauses) in rules {
        if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(object))) =
            components.schemas.get_mut(form)
        {
            object
                .extensions
                .get_or_insert_with(Default::default)
                .insert("allOf".into(), json!(clauses));
        }
    }
}

/// JSON body of PUT /v1/models/{id}/thresholds (and its answer): one rule per metric, none for a metric
/// left out.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    dice: Option<Rule>,
    jaccard: Option<Rule>,
    precision: Option<Rule>,
    recall: Option<Rule>,
    /// In pixels of the 128x128 working grid.
    hd95: Option<Rule>,
    pearson: Option<Rule>,
}
