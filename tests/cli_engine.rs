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

/// `spe calibrate` of these checkpoints (with `spec`) on the synthetic reference and calibration sets,
/// writing `out`; `extra` follows.
fn calibrate_args(checkpoints: &Path, spec: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let syn = synthetic();
    let (reference, calibration) = (syn.join("reference"), syn.join("calibration"));
    let mut args = command_line(
        "calibrate --checkpoints {} --spec {} --reference {} --calibration {} --out {}",
        &[checkpoints, spec, &reference, &calibration, out],
    );
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `spe estimate` of the family's `checkpoint` through `cal` on `images` with the synthetic reference
/// set, writing `out`; `extra` follows.
fn estimate_args(
    family: &Family,
    checkpoint: &str,
    cal: &Path,
    images: &Path,
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let syn = synthetic();
    let model = syn
        .join(family.checkpoints)
        .join(format!("{checkpoint}.onnx"));
    let (spec, reference) = (syn.join(family.spec), syn.join("reference"));
    let mut args = command_line(
        "estimate --model {} --spec {} --calibration {} --reference {} --images {} --out {}",
        &[&model, &spec, cal, &reference, images, out],
    );
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn calibrate(family: &Family, out: &Path, extra: &[&str]) -> serde_json::Value {
    let syn = synthetic();
    let (checkpoints, spec) = (syn.join(family.checkpoints), syn.join(family.spec));
    spe(&strs(&calibrate_args(&checkpoints, &spec, out, extra)));
    read_json(out)
}

fn run_estimate(
    family: &Family,
    checkpoint: &str,
    cal: &Path,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let batch = synthetic().join("batch");
    spe(&strs(&estimate_args(
        family, checkpoint, cal, &batch, out, extra,
    )));
    read_json(out)
}

fn real_dice_on_batch(family: &Family, checkpoint: &str, dir: &Path) -> f64 {
    let syn = synthetic();
    let out = dir.join(format!("eval_{checkpoint}.json"));
    let model = syn
        .join(family.checkpoints)
        .join(format!("{checkpoint}.onnx"));
    let args = command_line(
        "evaluate --model {} --spec {} --images {} --labels {} --out {}",
        &[
            &model,
            &syn.join(family.spec),
            &syn.join("batch"),
            &syn.join("batch_labels"),
            &out,
        ],
    );
    spe(&strs(&args));
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
    let (batch, e4) = (synthetic().join("batch"), dir.path().join("e4.json"));
    let args = estimate_args(&GRAY, "ckpt_05", &a, &batch, &e4, &["--support-size", "7"]);
    expect_failure(&strs(&args), "--support-size 7 (the calibration used 5)");
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
        let out = dir.path().join(out);
        spe(&strs(&estimate_args(
            &GRAY,
            "ckpt_05",
            &cal,
            images,
            &out,
            &[],
        )));
        read_json(&out)
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
    let (batch, x) = (synthetic().join("batch"), dir.path().join("x.json"));
    let args = estimate_args(&GRAY, "ckpt_06", &cal_path, &batch, &x, &[]);
    let out = spe_raw(&strs(&args));
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
        command_line(
            "evaluate --model {} --spec {} --images {} --labels {} --out {}",
            &[model, spec, images, labels, &out],
        )
    };
    let run = |args: Vec<String>, needle: &str| {
        expect_failure(&strs(&args), needle);
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
    for (spec, needle) in [
        (
            r#"{"input":{"channels":2},"output":{"kind":"argmax"}}"#,
            "channels",
        ),
        (
            r#"{"input":{},"output":{"kind":"argmax","colour":1}}"#,
            "colour",
        ),
    ] {
        std::fs::write(&bad_spec, spec).unwrap();
        run(eval(&good_model, &bad_spec, &images, &labels), needle);
    }
    // A truncated PNG among the images is named.
    let broken = dir.path().join("broken");
    let (broken_images, broken_labels) = (broken.join("images"), broken.join("labels"));
    std::fs::create_dir_all(&broken_images).unwrap();
    std::fs::create_dir_all(&broken_labels).unwrap();
    let put = |from: PathBuf, to: &str| std::fs::copy(from, broken.join(to)).unwrap();
    let run_broken = |needle: &str| {
        run(
            eval(&good_model, &good_spec, &broken_images, &broken_labels),
            needle,
        )
    };
    put(corrupt.join("truncated.png"), "images/a.png");
    put(syn.join("calibration/labels/cal_000.png"), "labels/a.png");
    run_broken("a.png");
    // An image without a label.
    put(syn.join("calibration/images/cal_001.png"), "images/b.png");
    run_broken("has no label");
    // An unknown reverse segmenter is a usage error.
    let checkpoints = syn.join("checkpoints");
    let args = calibrate_args(&checkpoints, &good_spec, &out, &["--reverse", "magic"]);
    expect_failure(&strs(&args), "unknown reverse segmenter");
}

#[test]
fn spe_plot_draws_a_calibration_file_as_svg() {
    let dir = tempfile::tempdir().unwrap();
    let cal_path = dir.path().join("cal.json");
    let cal = calibrate(
        &GRAY,
        &cal_path,
        &["--support-size", "5", "--repetitions", "2"],
    );
    let out = dir.path().join("cal.svg");
    let plot = |metric: &str, cal: &Path| {
        let mut args = command_line("plot --calibration {} --out {}", &[cal, &out]);
        args.extend(["--metric".to_string(), metric.to_string()]);
        args
    };
    spe(&strs(&plot("dice", &cal_path)));
    let svg = std::fs::read_to_string(&out).unwrap();
    let count = |class: &str| svg.matches(&format!(r#"class="{class}""#)).count();
    let checkpoints = cal["checkpoints"].as_array().unwrap().len();
    assert_eq!(count("checkpoint"), checkpoints - 1);
    assert_eq!(count("checkpoint excluded"), 1, "ckpt_00 finds nothing");
    assert_eq!((count("fit"), count("band")), (1, 1));
    let mae = cal["fits"]["dice"]["loo_mae"].as_f64().unwrap();
    assert!(
        svg.contains(&format!("leave-one-out MAE {}", spe::plot::statistic(mae))),
        "{svg}"
    );
    assert!(svg.starts_with("<svg ") && svg.contains("cal: calibration of Dice"));

    std::fs::remove_file(&out).unwrap();
    expect_failure(&strs(&plot("dise", &cal_path)), "use one of dice, jaccard");
    let spec = synthetic().join(GRAY.spec);
    expect_failure(&strs(&plot("dice", &spec)), "is not a calibration");
    assert!(!out.exists(), "no output on failure");
}
