//! The user's segmentation model: a JSON spec says how to feed it and how to read a mask from it.

use super::session_cache::PooledSession;
use super::{InferenceError, Runtime};
use crate::engine::{Gray, Mask, SIDE};
use ndarray::{Array4, ArrayViewD, Axis};
use ort::value::{Outlet, TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use utoipa::ToSchema;

/// How the model's input is scaled from the loaded gray image (0..255).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// x / 255
    #[default]
    Unit,
    /// 0..255 as float
    Raw,
    /// per image to [0, 1]
    Minmax,
    /// per image to zero mean, unit variance
    Zscore,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Defaults to the model's first input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 1, or 3 (the gray image replicated).
    #[serde(default = "one")]
    #[schema(schema_with = channels_schema)]
    pub channels: usize,
    #[serde(default)]
    pub scale: Scale,
}

fn one() -> usize {
    1
}

/// `channels` as the document declares it: the two values [`ModelSpec::validate`] accepts.
fn channels_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .description(Some("1, or 3 (the gray image replicated)."))
        .enum_values(Some([1, 3]))
        .default(Some(1.into()))
        .build()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// C >= 2 channels; foreground where argmax == foreground_class.
    Argmax,
    /// 1 channel of logits; foreground where sigmoid > threshold.
    Sigmoid,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Defaults to the model's first output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: OutputKind,
    /// argmax only (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreground_class: Option<usize>,
    /// sigmoid only (default 0.5), on the probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub threshold: Option<f32>,
}

/// The model spec JSON, e.g.
/// `{"input":{"name":"image","channels":1,"scale":"unit"},"output":{"name":"logits","kind":"argmax","foreground_class":1}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub input: InputSpec,
    pub output: OutputSpec,
}

impl ModelSpec {
    pub fn parse(json: &str) -> Result<Self, InferenceError> {
        let spec: Self =
            serde_json::from_str(json).map_err(|e| InferenceError::Spec(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the spec on its own (the model is checked in [`SegModel::load`]).
    pub fn validate(&self) -> Result<(), InferenceError> {
        if !matches!(self.input.channels, 1 | 3) {
            return Err(InferenceError::Spec(format!(
                "input.channels is {}; it must be 1 or 3",
                self.input.channels
            )));
        }
        match self.output.kind {
            OutputKind::Argmax if self.output.threshold.is_some() => Err(InferenceError::Spec(
                "output.threshold applies to kind \"sigmoid\" only".into(),
            )),
            OutputKind::Sigmoid if self.output.foreground_class.is_some() => {
                Err(InferenceError::Spec(
                    "output.foreground_class applies to kind \"argmax\" only".into(),
                ))
            }
            OutputKind::Sigmoid => match self.output.threshold {
                Some(t) if !(t > 0.0 && t < 1.0) => Err(InferenceError::Spec(format!(
                    "output.threshold is {t}; it must be strictly between 0 and 1"
                ))),
                _ => Ok(()),
            },
            OutputKind::Argmax => Ok(()),
        }
    }
}

/// Images per inference call: bounds memory, keeps the batch dimension busy.
const BATCH: usize = 16;

/// A loaded segmentation model with its validated spec.
pub struct SegModel {
    name: String,
    /// SHA-256 of the ONNX bytes (hex): how a calibration recognises the deployed model as a checkpoint.
    sha256: String,
    spec: ModelSpec,
    input_name: String,
    output_name: String,
    session: Mutex<PooledSession>,
}

impl SegModel {
    /// Loads the ONNX bytes and validates the spec against the model's declared inputs and outputs.
    pub fn load(
        runtime: &Runtime,
        bytes: &[u8],
        name: &str,
        spec: &ModelSpec,
    ) -> Result<Self, InferenceError> {
        spec.validate()?;
        let session = runtime.session(bytes, name)?;
        let mismatch = |reason: String| InferenceError::Signature {
            model: name.to_string(),
            reason,
        };
        let input =
            port(session.inputs(), spec.input.name.as_deref(), "input").map_err(mismatch)?;
        let output =
            port(session.outputs(), spec.output.name.as_deref(), "output").map_err(mismatch)?;
        let in_shape =
            float_tensor_shape(input.dtype(), "input", input.name()).map_err(mismatch)?;
        check_dim(&in_shape, 1, spec.input.channels as i64, "input channels").map_err(mismatch)?;
        check_dim(&in_shape, 2, SIDE as i64, "input height").map_err(mismatch)?;
        check_dim(&in_shape, 3, SIDE as i64, "input width").map_err(mismatch)?;
        let out_shape =
            float_tensor_shape(output.dtype(), "output", output.name()).map_err(mismatch)?;
        match spec.output.kind {
            OutputKind::Sigmoid => {
                check_dim(&out_shape, 1, 1, "output channels (sigmoid)").map_err(mismatch)?
            }
            OutputKind::Argmax => {
                let fg = spec.output.foreground_class.unwrap_or(1) as i64;
                if out_shape[1] >= 0 && out_shape[1] < 2 {
                    return Err(mismatch(format!(
                        "output {:?} has {} channel(s); kind \"argmax\" needs at least 2 (use kind \"sigmoid\" for one)",
                        output.name(),
                        out_shape[1]
                    )));
                }
                if out_shape[1] >= 0 && fg >= out_shape[1] {
                    return Err(mismatch(format!(
                        "foreground_class {fg} is out of range for {} output channels",
                        out_shape[1]
                    )));
                }
            }
        }
        Ok(Self {
            name: name.to_string(),
            sha256: session.sha256().to_string(),
            spec: spec.clone(),
            input_name: input.name().to_string(),
            output_name: output.name().to_string(),
            session: Mutex::new(session),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Predicted masks for gray images as loaded (0..255, SIDE x SIDE).
    pub fn predict(&self, images: &[Gray]) -> Result<Vec<Mask>, InferenceError> {
        let mut masks = Vec::with_capacity(images.len());
        for chunk in images.chunks(BATCH) {
            let input = self.input_tensor(chunk);
            let run_err = |reason: String| InferenceError::Run {
                model: self.name.clone(),
                reason,
            };
            let mut session = self
                .session
                .lock()
                .map_err(|_| run_err("a previous run panicked".into()))?;
            let tensor = TensorRef::from_array_view(&input).map_err(|e| run_err(e.to_string()))?;
            let outputs = session
                .run(ort::inputs![self.input_name.as_str() => tensor])
                .map_err(|e| run_err(e.to_string()))?;
            let logits = outputs[self.output_name.as_str()]
                .try_extract_array::<f32>()
                .map_err(|e| run_err(format!("output {:?}: {e}", self.output_name)))?;
            masks.extend(self.read_masks(logits, chunk.len()).map_err(run_err)?);
        }
        Ok(masks)
    }

    fn input_tensor(&self, chunk: &[Gray]) -> Array4<f32> {
        let c = self.spec.input.channels;
        let mut input = Array4::<f32>::zeros((chunk.len(), c, SIDE, SIDE));
        for (mut slot, image) in input.axis_iter_mut(Axis(0)).zip(chunk) {
            let scaled = scale(image, self.spec.input.scale);
            for mut channel in slot.axis_iter_mut(Axis(0)) {
                channel.assign(&scaled);
            }
        }
        input
    }

    fn read_masks(&self, logits: ArrayViewD<'_, f32>, n: usize) -> Result<Vec<Mask>, String> {
        let shape = logits.shape();
        if shape.len() != 4 || shape[0] != n || shape[2] != SIDE || shape[3] != SIDE {
            return Err(format!(
                "output {:?} has shape {shape:?}; expected [{n}, C, {SIDE}, {SIDE}]",
                self.output_name
            ));
        }
        let logits = logits
            .into_dimensionality::<ndarray::Ix4>()
            .map_err(|e| e.to_string())?;
        let masks = logits
            .axis_iter(Axis(0))
            .map(|item| match self.spec.output.kind {
                OutputKind::Sigmoid => {
                    let t = self.spec.output.threshold.unwrap_or(0.5);
                    // sigmoid(x) > t  <=>  x > logit(t); avoids exp per pixel and is exact at 0.5.
                    let cut = (t / (1.0 - t)).ln();
                    item.index_axis(Axis(0), 0).mapv(|x| x > cut)
                }
                OutputKind::Argmax => {
                    let fg = self.spec.output.foreground_class.unwrap_or(1);
                    Mask::from_shape_fn((SIDE, SIDE), |(y, x)| {
                        // First maximum wins, as numpy's argmax.
                        let mut best = 0;
                        let mut best_v = item[[0, y, x]];
                        for c in 1..item.shape()[0] {
                            let v = item[[c, y, x]];
                            if v > best_v {
                                best = c;
                                best_v = v;
                            }
                        }
                        best == fg
                    })
                }
            })
            .collect();
        Ok(masks)
    }
}

fn scale(image: &Gray, scale: Scale) -> Gray {
    match scale {
        Scale::Unit => image.mapv(|v| v / 255.0),
        Scale::Raw => image.clone(),
        Scale::Minmax => crate::engine::image_io::minmax(image.view()),
        Scale::Zscore => {
            let n = image.len() as f64;
            let mean = image.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = image
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let sd = var.sqrt();
            if sd <= 0.0 {
                Gray::zeros(image.raw_dim())
            } else {
                image.mapv(|v| ((v as f64 - mean) / sd) as f32)
            }
        }
    }
}

/// The input or output (`what`) named `wanted` among `ports`, or the first when none is named.
fn port<'s>(ports: &'s [Outlet], wanted: Option<&str>, what: &str) -> Result<&'s Outlet, String> {
    match wanted {
        Some(n) => ports.iter().find(|o| o.name() == n).ok_or_else(|| {
            format!(
                "it has no {what} named {n:?} (its {what}s: {})",
                names(ports.iter().map(|o| o.name()))
            )
        }),
        None => ports
            .first()
            .ok_or_else(|| format!("it declares no {what}")),
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// The declared shape of a 4-D float32 tensor (-1 for dynamic dimensions).
fn float_tensor_shape(dtype: &ValueType, role: &str, name: &str) -> Result<Vec<i64>, String> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => {
            if *ty != TensorElementType::Float32 {
                return Err(format!(
                    "{role} {name:?} is {ty:?}; a float32 tensor is required"
                ));
            }
            if shape.len() != 4 {
                return Err(format!(
                    "{role} {name:?} has {} dimensions {:?}; [N, C, {SIDE}, {SIDE}] is required",
                    shape.len(),
                    &shape[..]
                ));
            }
            Ok(shape.to_vec())
        }
        other => Err(format!("{role} {name:?} is {other:?}, not a tensor")),
    }
}

fn check_dim(shape: &[i64], axis: usize, want: i64, what: &str) -> Result<(), String> {
    let got = shape[axis];
    if got >= 0 && got != want {
        return Err(format!(
            "{what} is {got} in the model but {want} is required"
        ));
    }
    Ok(())
}
