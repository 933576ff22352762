//! The real UniverSeg architecture, exported by tools/export_universeg.py (random weights), runs through
//! ort on the CPU as the reverse segmenter: both graph forms, both layouts and float16 give the same
//! masks, and a support batch of 1 is shared by every query of a batch.

mod common;

use common::repo;
use ndarray::ArrayView2;
use spe::engine::{ReverseSegmenter, SupportSet};
use spe::inference::label_fusion::reference::synthetic_set;
use spe::inference::{OnnxReverse, OnnxReverseParams, Runtime, RuntimeConfig};
use std::path::Path;
use std::process::Command;

fn export(dir: &Path, form: &str, dtype: &str, layout: &str) -> Vec<u8> {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (it creates the venv)",
        python.display()
    );
    let out = dir.join(format!("{form}_{dtype}_{layout}.onnx"));
    let status = Command::new(python)
        .arg(repo().join("tools/export_universeg.py"))
        .args([
            "--random-weights",
            "0",
            "--form",
            form,
            "--dtype",
            dtype,
            "--layout",
            layout,
            "--out",
        ])
        .arg(&out)
        .status()
        .expect("run the export tool");
    assert!(status.success(), "export {form} {dtype} {layout} failed");
    std::fs::read(out).unwrap()
}

#[test]
fn exported_universeg_runs_through_ort_with_every_form_and_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::init(RuntimeConfig::default()).expect("ONNX Runtime (run `make ort`)");
    let (images, labels) = synthetic_set(5, 7);
    let support = SupportSet {
        images: images[..2].iter().map(|i| i.view()).collect(),
        labels: labels[..2].iter().map(|l| l.view()).collect(),
    };
    let queries: Vec<ArrayView2<f32>> = images[2..].iter().map(|i| i.view()).collect();
    // These random weights give logits around -4.6: a low threshold splits the pixels (~46% foreground)
    // instead of leaving the masks empty.
    let run = |bytes: &[u8], name: &str, batch: usize| {
        let params = OnnxReverseParams {
            threshold: 0.01,
            batch,
        };
        let model = OnnxReverse::load(&runtime, bytes, name, params).expect("load exported graph");
        model.segment(&support, &queries).expect("segment")
    };
    let decomposed = export(dir.path(), "decomposed", "float32", "nchw");
    let reference = run(&decomposed, "decomposed", 2);
    assert_eq!(reference.len(), queries.len());
    let foreground = reference
        .iter()
        .map(|m| m.iter().filter(|&&v| v).count())
        .sum::<usize>() as f64
        / (reference.len() * 128 * 128) as f64;
    assert!(
        (0.05..0.95).contains(&foreground),
        "foreground fraction {foreground}: the check would be trivial"
    );
    assert!(reference.iter().all(|m| m.dim() == (128, 128)));
    assert_eq!(
        run(&decomposed, "decomposed", 1),
        reference,
        "batch size must not change the masks"
    );
    let agreement = |other: &[spe::engine::Mask]| {
        let same: usize = reference
            .iter()
            .zip(other)
            .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| x == y).count())
            .sum();
        same as f64 / (reference.len() * 128 * 128) as f64
    };
    // Each other form against the decomposed fp32 NCHW graph: (form, batch size, least agreement, what).
    let forms = [
        ("naive float32 nchw", 3, 0.999, "naive vs decomposed"),
        ("decomposed float16 nchw", 2, 0.98, "fp16 vs fp32"),
        ("decomposed float32 nhwc", 2, 0.999, "nhwc vs nchw layout"),
    ];
    for (form, batch, least, what) in forms {
        let [variant, dtype, layout]: [&str; 3] =
            form.split(' ').collect::<Vec<_>>().try_into().unwrap();
        let name = what.split(' ').next().unwrap();
        let masks = run(&export(dir.path(), variant, dtype, layout), name, batch);
        let agreement = agreement(&masks);
        assert!(agreement > least, "{what}: {agreement}");
    }
}
