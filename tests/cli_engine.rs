//! `spe evaluate`, `spe calibrate` and `spe estimate` end to end on the committed synthetic fixtures
//! (no ../shared needed): the real binary, real ONNX Runtime, real files.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn synthetic() -> PathBuf {
    fixtures().join("synthetic")
}

struct Family {
    checkpoints: &'static str,
    spec: &'static str,
}

const GRAY: Family = Family {
    checkpoints: "checkpoints",
    spec: "spec_gray_argmax.json",
};
const RGB_SIGMOID: Family = Family {
    checkpoints: "checkpoints_rgb_sigmoid",
    spec: "spec_rgb_sigmoid.json",
};

fn calibrate(family: &Family, out: &Path, extra: &[&str]) -> serde_json::Value {
    let syn = synthetic();
    let mut args: Vec<String> = vec![
        "calibrate".into(),
        "--checkpoints".into(),
        o(syn.join(family.checkpoints)),
        "--spec".into(),
        o(syn.join(family.spec)),
        "--reference".into(),
        o(syn.join("reference")),
        "--calibration".into(),
        o(syn.join("calibration")),
        "--out".into(),
        o(out),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    spe(&args.iter().map(String::as_str).collect::<Vec<_>>());
    read_json(out)
}

fn run_estimate(
    family: &Family,
    checkpoint: &str,
    cal: &Path,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    estimate_on(
        family,
        checkpoint,
        cal,
        &synthetic().join("batch"),
        out,
        extra,
    )
}

fn estimate_on(
    family: &Family,
    checkpoint: &str,
    cal: &Path,
    images: &Path,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let syn = synthetic();
    let model = syn
        .join(family.checkpoints)
        .join(format!("{checkpoint}.onnx"));
    let mut args: Vec<String> = vec![
        "estimate".into(),
        "--model".into(),
        o(model),
        "--spec".into(),
        o(syn.join(family.spec)),
        "--calibration".into(),
        o(cal),
        "--reference".into(),
        o(syn.join("reference")),
        "--images".into(),
        o(images),
        "--out".into(),
        o(out),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    spe(&args.iter().map(String::as_str).collect::<Vec<_>>());
    read_json(out)
}

fn real_dice_on_batch(family: &Family, checkpoint: &str, dir: &Path) -> f64 {
    let syn = synthetic();
    let out = dir.join(format!("eval_{checkpoint}.json"));
    let args: Vec<String> = vec![
        "evaluate".into(),
        "--model".into(),
        o(syn
            .join(family.checkpoints)
            .join(format!("{checkpoint}.onnx"))),
        "--spec".into(),
        o(syn.join(family.spec)),
        "--images".into(),
        o(syn.join("batch")),
        "--labels".into(),
        o(syn.join("batch_labels")),
        "--out".into(),
        o(&out),
    ];
    spe(&args.iter().map(String::as_str).collect::<Vec<_>>());
    read_json(&out)["mean"]["dice"].as_f64().unwrap()
}

/// Calibrate a family, then estimate every checkpoint on the batch and compare with the truth.
fn calibrate_and_estimate(family: &Family, count: usize, tolerance: f64) {
    let dir = tempfile::tempdir().unwrap();
    let cal_path = dir.path().join("cal.json");
    let cal = calibrate(family, &cal_path, &[]);
    assert_eq!(
        cal["excluded"],
        serde_json::json!(["ckpt_00"]),
        "the empty checkpoint is left out"
    );
    assert_eq!(cal["checkpoints"].as_array().unwrap().len(), count);
    for metric in ["dice", "jaccard", "precision", "recall", "hd95", "pearson"] {
        let fit = &cal["fits"][metric];
        assert_eq!(fit["n_points"], count - 1, "{metric}");
        assert!(
            fit["loo_mae"].as_f64().unwrap().is_finite(),
            "{metric}: {fit}"
        );
    }
    assert!(
        cal["fits"]["dice"]["pearson_r"].as_f64().unwrap() > 0.9,
        "{}",
        cal["fits"]["dice"]
    );

    // The empty checkpoint finds nothing in the batch either.
    let empty = run_estimate(
        family,
        "ckpt_00",
        &cal_path,
        &dir.path().join("e0.json"),
        &[],
    );
    assert_eq!(empty["status"], "insufficient_support", "{empty}");
    assert_eq!(empty["support"]["used"], 0);
    assert_eq!(empty["support"]["rejected"], 12);
    assert!(empty.get("metrics").is_none());

    let mut errors = Vec::new();
    for k in 1..count {
        let name = format!("ckpt_{k:02}");
        let est = run_estimate(
            family,
            &name,
            &cal_path,
            &dir.path().join(format!("e{k}.json")),
            &[],
        );
        assert_eq!(est["status"], "ok", "{est}");
        let dice = &est["metrics"]["dice"];
        let value = dice["estimate"].as_f64().unwrap();
        let [lo, hi] = [
            dice["interval"][0].as_f64().unwrap(),
            dice["interval"][1].as_f64().unwrap(),
        ];
        assert!(
            (0.0..=1.0).contains(&lo) && lo <= value && value <= hi && hi <= 1.0,
            "{dice}"
        );
        assert!(est["metrics"]["hd95"]["estimate"].as_f64().unwrap() >= 0.0);
        let real = real_dice_on_batch(family, &name, dir.path());
        eprintln!("{name}: estimated dice {value:.3}, real {real:.3}");
        errors.push((value - real).abs());
    }
    let mae = errors.iter().sum::<f64>() / errors.len() as f64;
    eprintln!("dice MAE over {} checkpoints: {mae:.4}", errors.len());
    assert!(mae <= tolerance, "dice MAE {mae} > {tolerance}");
}

#[test]
fn gray_argmax_family_estimates_track_the_real_dice() {
    calibrate_and_estimate(&GRAY, 8, 0.08);
}

#[test]
fn rgb_raw_sigmoid_family_estimates_track_the_real_dice() {
    calibrate_and_estimate(&RGB_SIGMOID, 6, 0.08);
}

#[test]
fn same_inputs_and_seed_give_the_same_numbers_and_the_seed_matters() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.json"),
        dir.path().join("b.json"),
        dir.path().join("c.json"),
    );
    // A support size below the candidate count makes the repetitions draw random subsets.
    let small = ["--support-size", "5", "--repetitions", "3", "--seed", "11"];
    let cal_a = calibrate(&GRAY, &a, &small);
    let cal_b = calibrate(&GRAY, &b, &small);
    assert_eq!(cal_a, cal_b);
    let other = ["--support-size", "5", "--repetitions", "3", "--seed", "12"];
    let cal_c = calibrate(&GRAY, &c, &other);
    assert_ne!(cal_a["checkpoints"], cal_c["checkpoints"]);
    let reps = cal_a["checkpoints"][3]["per_repetition"]
        .as_array()
        .unwrap();
    assert_eq!(reps.len(), 3);
    assert_ne!(reps[0], reps[1], "different subsets per repetition");
    assert_eq!(cal_a["checkpoints"][3]["support"]["used"], 5);
    // The estimate reads the protocol from the calibration.
    let e1 = run_estimate(&GRAY, "ckpt_05", &a, &dir.path().join("e1.json"), &[]);
    let e2 = run_estimate(&GRAY, "ckpt_05", &a, &dir.path().join("e2.json"), &[]);
    assert_eq!(e1, e2);
    assert_eq!(e1["support"]["used"], 5);
    // Other repetitions and seeds only draw other supports; another support size would read mappings
    // fitted for other pseudo metrics, so it is refused.
    let e3 = run_estimate(
        &GRAY,
        "ckpt_05",
        &a,
        &dir.path().join("e3.json"),
        &["--repetitions", "2", "--seed", "3"],
    );
    assert_eq!(e3["status"], "ok", "{e3}");
    let syn = synthetic();
    let e4 = dir.path().join("e4.json");
    expect_failure(
        &[
            "estimate",
            "--model",
            s(&syn.join("checkpoints/ckpt_05.onnx")),
            "--spec",
            s(&syn.join(GRAY.spec)),
            "--calibration",
            s(&a),
            "--reference",
            s(&syn.join("reference")),
            "--images",
            s(&syn.join("batch")),
            "--out",
            s(&e4),
            "--support-size",
            "7",
        ],
        "--support-size 7 (the calibration used 5)",
    );
    assert!(!e4.exists(), "no output on failure");
}

/// The committed DICOM and NIfTI fixtures hold the PNG batch's pixels (tests/clinical_fixtures.rs): a batch
/// folder of either, or of both mixed under other names, gives the PNG batch's estimate.
#[test]
fn dicom_and_nifti_batch_folders_estimate_like_the_png_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("cal.json");
    calibrate(&GRAY, &cal, &["--support-size", "5", "--repetitions", "2"]);
    let run = |images: &Path, out: &str| {
        estimate_on(&GRAY, "ckpt_05", &cal, images, &dir.path().join(out), &[])
    };
    let png = run(&synthetic().join("batch"), "png.json");
    assert!(
        png["metrics"]["dice"]["estimate"].as_f64().is_some(),
        "{png}"
    );
    assert!(png.get("hd95_mm").is_none(), "PNGs carry no pixel size");
    // The fixtures' 128x128 images have 0.7 mm pixels: HD95 is also given in mm, the rest is the PNG estimate.
    let without_mm = |mut v: serde_json::Value| {
        let hd = v
            .as_object_mut()
            .unwrap()
            .remove("hd95_mm")
            .expect("hd95_mm");
        let (mm, px) = (
            hd["pixel_mm"].as_f64().unwrap(),
            v["metrics"]["hd95"]["estimate"].as_f64().unwrap(),
        );
        assert!((mm - 0.7).abs() < 1e-6, "{hd}"); // NIfTI stores it as f32
        assert!(
            (hd["estimate"].as_f64().unwrap() - px * mm).abs() < 1e-9,
            "{hd}"
        );
        v
    };
    let dicom = run(&fixtures().join("dicom/batch"), "dicom.json");
    assert_eq!(without_mm(dicom), png);
    let nifti = run(&fixtures().join("nifti"), "nifti.json");
    assert_eq!(without_mm(nifti), png);
    // Half the instances under extensionless UID names (as PACS exports write them), in reverse name order,
    // beside the other half as PNGs and a file that is not an image.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    let pngs = sorted(&synthetic().join("batch"));
    let dcms = sorted(&fixtures().join("dicom/batch"));
    assert_eq!(pngs.len(), dcms.len());
    for (i, (png, dcm)) in pngs.iter().zip(&dcms).enumerate() {
        if i % 2 == 0 {
            std::fs::copy(dcm, mixed.join(format!("1.2.826.0.{}", 99 - i))).unwrap();
        } else {
            std::fs::copy(png, mixed.join(png.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(mixed.join("notes"), "not an image").unwrap();
    // Not every image says its pixel size, so no mm figure.
    assert_eq!(run(&mixed, "mixed.json"), png);
}

fn sorted(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn universeg_contract_onnx_runs_as_the_reverse_segmenter() {
    let dir = tempfile::tempdir().unwrap();
    let cal_path = dir.path().join("cal.json");
    let reverse = format!("onnx:{}", fixtures().join("universeg_tiny.onnx").display());
    let cal = calibrate(&GRAY, &cal_path, &["--reverse", &reverse]);
    // Named by its digest, as the service names it: the same file anywhere gives the same calibration.
    let bytes = std::fs::read(fixtures().join("universeg_tiny.onnx")).unwrap();
    assert_eq!(
        cal["reverse"],
        format!(
            "onnx(sha256:{},threshold=0.4)",
            spe::digest::sha256_hex(&bytes)
        )
    );
    assert_eq!(cal["excluded"], serde_json::json!(["ckpt_00"]));
    let est = run_estimate(
        &GRAY,
        "ckpt_06",
        &cal_path,
        &dir.path().join("e.json"),
        &["--reverse", &reverse],
    );
    assert_eq!(est["status"], "ok", "{est}");
    // A calibration made with another reverse segmenter is refused, not silently mixed.
    let out = spe_raw(&[
        "estimate",
        "--model",
        s(&synthetic().join("checkpoints/ckpt_06.onnx")),
        "--spec",
        s(&synthetic().join(GRAY.spec)),
        "--calibration",
        s(&cal_path),
        "--reference",
        s(&synthetic().join("reference")),
        "--images",
        s(&synthetic().join("batch")),
        "--out",
        s(&dir.path().join("x.json")),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("same reverse segmenter"), "{stderr}");
    assert!(!dir.path().join("x.json").exists(), "no output on failure");
}

fn expect_failure(args: &[&str], needle: &str) {
    let out = spe_raw(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "spe {args:?} should fail");
    assert!(
        stderr.contains(needle),
        "spe {args:?}: expected {needle:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_inputs_fail_with_messages_that_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let syn = synthetic();
    let corrupt = fixtures().join("corrupt");
    let out = dir.path().join("out.json");
    let eval = |model: &Path, spec: &Path, images: &Path, labels: &Path| {
        vec![
            "evaluate".to_string(),
            "--model".into(),
            model.display().to_string(),
            "--spec".into(),
            spec.display().to_string(),
            "--images".into(),
            images.display().to_string(),
            "--labels".into(),
            labels.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let run = |args: Vec<String>, needle: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_failure(&refs, needle);
        assert!(!out.exists(), "no output is written on failure");
    };
    let good_model = syn.join("checkpoints/ckpt_03.onnx");
    let good_spec = syn.join(GRAY.spec);
    let images = syn.join("calibration/images");
    let labels = syn.join("calibration/labels");

    // The ONNX signature does not match the spec.
    run(
        eval(
            &corrupt.join("wrong_signature.onnx"),
            &good_spec,
            &images,
            &labels,
        ),
        "no input named \"image\"",
    );
    // Not an ONNX model at all.
    run(
        eval(&corrupt.join("garbage.onnx"), &good_spec, &images, &labels),
        "garbage",
    );
    // The spec disagrees with the model (sigmoid needs one output channel).
    let sigmoid_spec = dir.path().join("sigmoid.json");
    std::fs::write(
        &sigmoid_spec,
        r#"{"input":{"name":"image"},"output":{"name":"logits","kind":"sigmoid"}}"#,
    )
    .unwrap();
    run(
        eval(&good_model, &sigmoid_spec, &images, &labels),
        "output channels",
    );
    // Malformed spec JSON and unknown fields.
    let bad_spec = dir.path().join("bad.json");
    std::fs::write(
        &bad_spec,
        r#"{"input":{"channels":2},"output":{"kind":"argmax"}}"#,
    )
    .unwrap();
    run(eval(&good_model, &bad_spec, &images, &labels), "channels");
    std::fs::write(
        &bad_spec,
        r#"{"input":{},"output":{"kind":"argmax","colour":1}}"#,
    )
    .unwrap();
    run(eval(&good_model, &bad_spec, &images, &labels), "colour");
    // A truncated PNG among the images is named.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(broken.join("images")).unwrap();
    std::fs::create_dir_all(broken.join("labels")).unwrap();
    std::fs::copy(corrupt.join("truncated.png"), broken.join("images/a.png")).unwrap();
    std::fs::copy(
        syn.join("calibration/labels/cal_000.png"),
        broken.join("labels/a.png"),
    )
    .unwrap();
    run(
        eval(
            &good_model,
            &good_spec,
            &broken.join("images"),
            &broken.join("labels"),
        ),
        "a.png",
    );
    // An image without a label.
    std::fs::copy(
        syn.join("calibration/images/cal_001.png"),
        broken.join("images/b.png"),
    )
    .unwrap();
    run(
        eval(
            &good_model,
            &good_spec,
            &broken.join("images"),
            &broken.join("labels"),
        ),
        "has no label",
    );
    // An unknown reverse segmenter is a usage error.
    expect_failure(
        &[
            "calibrate",
            "--checkpoints",
            s(&syn.join("checkpoints")),
            "--spec",
            s(&good_spec),
            "--reference",
            s(&syn.join("reference")),
            "--calibration",
            s(&syn.join("calibration")),
            "--out",
            s(&out),
            "--reverse",
            "magic",
        ],
        "unknown reverse segmenter",
    );
}
