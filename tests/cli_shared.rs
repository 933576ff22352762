//! `spe evaluate` and `spe calibrate` on the shared JSRT model family (../shared).

mod common;

use common::*;

const METRICS: [&str; 6] = ["dice", "jaccard", "precision", "recall", "hd95", "pearson"];

#[test]
fn evaluate_matches_the_independent_reference_metrics() {
    let Some(shared) = shared() else { return };
    let models = shared.join("models/jsrt-heart-unet");
    let reference = read_json(&models.join("reference_metrics.json"));
    let spec = repo().join("tests/fixtures/jsrt_spec.json");
    let out_dir = tempfile::tempdir().unwrap();
    let epochs = reference["epochs"].as_object().unwrap();
    assert_eq!(epochs.len(), 16);
    let (mut checked, mut differing, mut images) = (0, 0, 0);
    for (epoch, splits) in epochs {
        let model = models.join(format!("epoch_{:03}.onnx", epoch.parse::<u32>().unwrap()));
        for split in ["train", "test"] {
            let data = shared.join("datasets/jsrt").join(split);
            let out = out_dir.path().join(format!("{epoch}_{split}.json"));
            let (image_dir, label_dir) = (data.join("images"), data.join("labels"));
            let args = command_line(
                "evaluate --model {} --spec {} --images {} --labels {} --out {}",
                &[&model, &spec, &image_dir, &label_dir, &out],
            );
            spe(&strs(&args));
            let (values, differ, count) = compare(
                &read_json(&out),
                &splits[split],
                &format!("epoch {epoch} {split}"),
            );
            checked += values;
            differing += differ;
            images += count;
        }
    }
    assert_eq!(checked, 16 * (172 + 49) * 6);
    assert!(
        differing * 200 <= images,
        "{differing} of {images} images differ beyond 1e-6"
    );
}

/// Every per-image metric within 1e-6, except on a few images where ONNX Runtime's floating point (which
/// differs between CPUs' kernels) can flip a boundary pixel: those must still be within a pixel's worth.
/// Returns how many values were compared, how many images differ beyond 1e-6, and how many images there are
/// (the caller allows 0.5% of all images to differ).
fn compare(
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
    what: &str,
) -> (usize, usize, usize) {
    let theirs = theirs["per_image"].as_object().unwrap();
    let ours = ours["per_image"].as_object().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{what}: image count");
    let (mut n, mut differing) = (0, 0);
    for (case, expected) in theirs {
        let got = &ours[case];
        let mut exact = true;
        for m in METRICS {
            let (a, b) = (got[m].as_f64().unwrap(), expected[m].as_f64().unwrap());
            let close = if m == "hd95" { 1.5 } else { 0.01 };
            assert!(
                (a - b).abs() <= close,
                "{what} {case} {m}: ours {a}, reference {b}"
            );
            exact &= (a - b).abs() <= 1e-6;
            n += 1;
        }
        differing += usize::from(!exact);
    }
    (n, differing, theirs.len())
}

#[test]
fn calibrate_on_the_jsrt_family_meets_the_accuracy_bar() {
    let Some(shared) = shared() else { return };
    let out = tempfile::tempdir().unwrap();
    let cal_path = out.path().join("cal.json");
    let jsrt = shared.join("datasets/jsrt");
    let started = std::time::Instant::now();
    let checkpoints = shared.join("models/jsrt-heart-unet");
    let spec = repo().join("tests/fixtures/jsrt_spec.json");
    let (train, test) = (jsrt.join("train"), jsrt.join("test"));
    let args = command_line(
        "calibrate --checkpoints {} --spec {} --reference {} --calibration {} --out {}",
        &[&checkpoints, &spec, &train, &test, &cal_path],
    );
    spe(&strs(&args));
    eprintln!("calibrate took {:.1}s", started.elapsed().as_secs_f64());
    let cal = read_json(&cal_path);
    report(&cal);
    assert_eq!(
        cal["excluded"],
        serde_json::json!(["epoch_001"]),
        "the all-empty first checkpoint is left out"
    );
    assert_eq!(cal["checkpoints"].as_array().unwrap().len(), 16);
    let dice = &cal["fits"]["dice"];
    assert!(dice["loo_mae"].as_f64().unwrap() <= 0.03, "{dice}");
    assert!(dice["pearson_r"].as_f64().unwrap() >= 0.97, "{dice}");
    for m in ["hd95", "precision", "recall"] {
        assert!(cal["fits"][m]["loo_mae"].as_f64().unwrap().is_finite());
    }
    batches_of_every_size_agree(&shared, &cal_path, out.path());
}

/// The deployed (last) checkpoint on batches of 6, 12, 25 and 49 test images: each is anchored at its
/// checkpoint and their intervals overlap (with one mapping for every size, small batches read lower).
fn batches_of_every_size_agree(
    shared: &std::path::Path,
    cal: &std::path::Path,
    dir: &std::path::Path,
) {
    let test = shared.join("datasets/jsrt/test");
    let mut names: Vec<String> = std::fs::read_dir(test.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let model = shared.join("models/jsrt-heart-unet/epoch_060.onnx");
    let spec = repo().join("tests/fixtures/jsrt_spec.json");
    let train = shared.join("datasets/jsrt/train");
    let mut intervals = Vec::new();
    for size in [6usize, 12, 25, 49] {
        let batch = dir.join(format!("batch{size}"));
        std::fs::create_dir_all(&batch).unwrap();
        // Every k-th image, so each batch spreads over the split.
        for name in names.iter().step_by(names.len() / size).take(size) {
            std::fs::copy(test.join("images").join(name), batch.join(name)).unwrap();
        }
        let out = dir.join(format!("est{size}.json"));
        let args = command_line(
            "estimate --model {} --spec {} --calibration {} --reference {} --images {} --out {}",
            &[&model, &spec, cal, &train, &batch, &out],
        );
        spe(&strs(&args));
        let est = read_json(&out);
        assert_eq!(est["anchor"], "epoch_060", "{est}");
        let dice = &est["metrics"]["dice"];
        let iv = [
            dice["interval"][0].as_f64().unwrap(),
            dice["interval"][1].as_f64().unwrap(),
        ];
        eprintln!("{size} images: dice {} {iv:?}", dice["estimate"]);
        intervals.push((size, iv));
    }
    for (a, ia) in &intervals {
        for (b, ib) in &intervals {
            assert!(
                ia[0] <= ib[1] && ib[0] <= ia[1],
                "{a} vs {b} images: {intervals:?}"
            );
        }
    }
}

fn report(cal: &serde_json::Value) {
    for m in METRICS {
        let f = &cal["fits"][m];
        eprintln!(
            "{m:<9} {:<9} loo_mae {:.4} r {:.4}",
            f["mapping"]["kind"].as_str().unwrap(),
            f["loo_mae"].as_f64().unwrap(),
            f["pearson_r"].as_f64().unwrap()
        );
    }
}
