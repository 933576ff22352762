//! Any ONNX model following the UniverSeg contract (method.md) as a reverse segmenter.
//! inputs `target` [B,1,H,W], `support_images` and `support_labels` [B or 1,S,1,H,W]; output `logits` [B,1,H,W].

use super::session_cache::PooledSession;
use super::{InferenceError, Runtime};
use crate::engine::{EngineError, Mask, ReverseSegmenter, SupportSet, SIDE};
use half::f16;
use ndarray::{Array, Array4, Array5, ArrayView2, ArrayViewD, Axis, IxDyn};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

pub const TARGET: &str = "target";
pub const SUPPORT_IMAGES: &str = "support_images";
pub const SUPPORT_LABELS: &str = "support_labels";
pub const LOGITS: &str = "logits";

/// Supports per call for the atlas check (UniverSeg's training limit).
const MAX_SUPPORTS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OnnxReverseParams {
    /// Foreground where sigmoid(logits) > threshold.
    pub threshold: f32,
    /// Queries per run.
    pub batch: usize,
}

impl Default for OnnxReverseParams {
    fn default() -> Self {
        Self {
            threshold: super::DEFAULT_ONNX_THRESHOLD,
            batch: 8,
        }
    }
}

pub struct OnnxReverse {
    name: String,
    params: OnnxReverseParams,
    half: bool,
    /// A fixed support batch dimension > 1 forces replicating the support per query.
    replicate_support: bool,
    /// A fixed target batch dimension overrides `params.batch`.
    batch: usize,
    session: Mutex<PooledSession>,
}

impl OnnxReverse {
    pub fn load(
        runtime: &Runtime,
        bytes: &[u8],
        name: &str,
        params: OnnxReverseParams,
    ) -> Result<Self, InferenceError> {
        if !(params.threshold > 0.0 && params.threshold < 1.0) || params.batch == 0 {
            return Err(InferenceError::Spec(format!(
                "reverse segmenter threshold must be in (0,1) and batch >= 1 (got {} and {})",
                params.threshold, params.batch
            )));
        }
        let session = runtime.session(bytes, name)?;
        let mismatch = |reason: String| {
            InferenceError::Signature {
            model: name.to_string(),
            reason: format!("{reason} (the UniverSeg contract: inputs target [B,1,128,128], support_images and support_labels [B or 1,S,1,128,128], output logits [B,1,128,128])"),
        }
        };
        let find = |list: &[ort::value::Outlet],
                    n: &str|
         -> Result<(TensorElementType, Vec<i64>), InferenceError> {
            let outlet = list
                .iter()
                .find(|o| o.name() == n)
                .ok_or_else(|| mismatch(format!("no tensor named {n:?}")))?;
            match outlet.dtype() {
                ValueType::Tensor { ty, shape, .. } => Ok((*ty, shape.to_vec())),
                other => Err(mismatch(format!("{n:?} is {other:?}, not a tensor"))),
            }
        };
        let (ty, target) = find(session.inputs(), TARGET)?;
        let (ty_si, support) = find(session.inputs(), SUPPORT_IMAGES)?;
        let (ty_sl, labels) = find(session.inputs(), SUPPORT_LABELS)?;
        let (ty_out, logits) = find(session.outputs(), LOGITS)?;
        let half = match ty {
            TensorElementType::Float32 => false,
            TensorElementType::Float16 => true,
            other => {
                return Err(mismatch(format!(
                    "target is {other:?}; float32 or float16 expected"
                )))
            }
        };
        if [ty_si, ty_sl, ty_out].iter().any(|t| *t != ty) {
            return Err(mismatch(
                "inputs and output must share one element type".into(),
            ));
        }
        let fits = |shape: &[i64], want: &[i64]| {
            shape.len() == want.len()
                && shape
                    .iter()
                    .zip(want)
                    .all(|(&g, &w)| g < 0 || w < 0 || g == w)
        };
        let side = SIDE as i64;
        if !fits(&target, &[-1, 1, side, side]) || !fits(&logits, &[-1, 1, side, side]) {
            return Err(mismatch(format!(
                "target {target:?} / logits {logits:?} have the wrong shape"
            )));
        }
        if !fits(&support, &[-1, -1, 1, side, side]) || !fits(&labels, &[-1, -1, 1, side, side]) {
            return Err(mismatch(format!(
                "support_images {support:?} / support_labels {labels:?} have the wrong shape"
            )));
        }
        let batch = if target[0] > 0 {
            target[0] as usize
        } else {
            params.batch
        };
        Ok(Self {
            name: name.to_string(),
            params,
            half,
            replicate_support: support[0] > 1,
            batch,
            session: Mutex::new(session),
        })
    }

    /// What a calibration records for the segmenter loaded under `name` with `threshold`.
    pub fn description(name: &str, threshold: f32) -> String {
        format!("onnx({name},threshold={threshold})")
    }

    fn to_value<D: ndarray::Dimension>(&self, a: Array<f32, D>) -> Result<DynValue, String> {
        let a = a.into_dyn();
        if self.half {
            Tensor::from_array(a.mapv(f16::from_f32))
                .map(|t| t.into_dyn())
                .map_err(|e| e.to_string())
        } else {
            Tensor::from_array(a)
                .map(|t| t.into_dyn())
                .map_err(|e| e.to_string())
        }
    }

    /// Binds the support tensors and a host output once: ONNX Runtime copies a bound input to the
    /// provider's device at bind time, so on a GPU the supports cross the bus once per call, not once per
    /// batch of queries.
    fn bind_supports(
        session: &Session,
        s_img: &DynValue,
        s_lbl: &DynValue,
    ) -> Result<IoBinding, ort::Error> {
        let mut binding = session.create_binding()?;
        binding.bind_input(SUPPORT_IMAGES, s_img)?;
        binding.bind_input(SUPPORT_LABELS, s_lbl)?;
        let host = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )?;
        binding.bind_output_to_device(LOGITS, &host)?;
        Ok(binding)
    }

    fn run_batch(
        &self,
        session: &mut Session,
        binding: &mut IoBinding,
        targets: Array4<f32>,
    ) -> Result<Vec<Mask>, String> {
        let n = targets.shape()[0];
        let target = self.to_value(targets)?;
        binding
            .bind_input(TARGET, &target)
            .map_err(|e| e.to_string())?;
        let outputs = session.run_binding(binding).map_err(|e| e.to_string())?;
        let out = &outputs[LOGITS];
        let logits: ArrayViewD<f32>;
        let converted;
        if self.half {
            converted = out
                .try_extract_array::<f16>()
                .map_err(|e| e.to_string())?
                .mapv(f16::to_f32);
            logits = converted.view();
        } else {
            logits = out.try_extract_array::<f32>().map_err(|e| e.to_string())?;
        }
        if logits.shape() != [n, 1, SIDE, SIDE] {
            return Err(format!(
                "logits have shape {:?}; expected [{n}, 1, {SIDE}, {SIDE}]",
                logits.shape()
            ));
        }
        let t = self.params.threshold;
        let cut = (t / (1.0 - t)).ln();
        Ok(logits
            .axis_iter(Axis(0))
            .map(|item| Mask::from_shape_fn((SIDE, SIDE), |(y, x)| item[IxDyn(&[0, y, x])] > cut))
            .collect())
    }
}

impl ReverseSegmenter for OnnxReverse {
    /// UniverSeg's published weights were trained with at most 64 supports.
    fn max_supports(&self) -> Option<usize> {
        Some(MAX_SUPPORTS)
    }

    fn describe(&self) -> String {
        Self::description(&self.name, self.params.threshold)
    }

    fn segment(
        &self,
        support: &SupportSet<'_>,
        queries: &[ArrayView2<'_, f32>],
    ) -> Result<Vec<Mask>, EngineError> {
        let err = |reason: String| EngineError::Reverse(format!("{}: {reason}", self.name));
        let s = support.images.len();
        let support_tensor = |views: Vec<ArrayView2<'_, f32>>, copies: usize| {
            let mut a = Array5::<f32>::zeros((copies, s, 1, SIDE, SIDE));
            for mut copy in a.axis_iter_mut(Axis(0)) {
                for (mut slot, v) in copy.axis_iter_mut(Axis(0)).zip(&views) {
                    slot.index_axis_mut(Axis(0), 0).assign(v);
                }
            }
            a
        };
        let copies = if self.replicate_support {
            self.batch
        } else {
            1
        };
        let labels: Vec<ndarray::Array2<f32>> = support
            .labels
            .iter()
            .map(|l| l.mapv(|v| if v { 1.0 } else { 0.0 }))
            .collect();
        // Built once per call and reused for every batch of queries.
        let s_img = self
            .to_value(support_tensor(support.images.clone(), copies))
            .map_err(err)?;
        let s_lbl = self
            .to_value(support_tensor(
                labels.iter().map(|l| l.view()).collect(),
                copies,
            ))
            .map_err(err)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| err("a previous run panicked".into()))?;
        let mut binding =
            Self::bind_supports(&session, &s_img, &s_lbl).map_err(|e| err(e.to_string()))?;
        let mut masks = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(self.batch) {
            // Every run gets a full batch (padded with copies of the last query): a fixed batch dimension
            // requires it, and on a GPU a new shape would trigger another cuDNN algorithm search.
            let rows = self.batch;
            let mut targets = Array4::<f32>::zeros((rows, 1, SIDE, SIDE));
            for (i, mut slot) in targets.axis_iter_mut(Axis(0)).enumerate() {
                slot.index_axis_mut(Axis(0), 0)
                    .assign(&chunk[i.min(chunk.len() - 1)]);
            }
            let mut out = self
                .run_batch(&mut session, &mut binding, targets)
                .map_err(err)?;
            out.truncate(chunk.len());
            masks.extend(out);
        }
        Ok(masks)
    }
}
