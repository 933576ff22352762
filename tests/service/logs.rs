//! Patient data stays out of the logs: uploads whose file and zip-entry names carry patient names (as PACS
//! exports do) are rejected, and the service's log output (the real binary, default log filter) never
//! shows those names.

use crate::common::*;
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use std::process::{Command, Stdio};

const PATIENTS: [&str; 3] = ["DOE^JOHN", "SMITH^JANE", "ROE^RICHARD"];

fn named(data: Vec<u8>, name: &str) -> Part {
    Part::bytes(data).file_name(name.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_name_the_uploaded_files() {
    let database_url = fresh_database().await;
    let blob_dir = tempfile::tempdir().unwrap();
    let log_path = blob_dir.path().join("spe.log");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_spe"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--blob-store")
        .arg(blob_dir.path().join("blobs"))
        .env("DATABASE_URL", &database_url)
        .env_remove("RUST_LOG")
        .current_dir(repo())
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(
            std::fs::File::options()
                .append(true)
                .open(&log_path)
                .unwrap(),
        )
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start the spe binary");
    let mut server = ChildProcess(child);
    let app = TestApp::external(
        format!("http://127.0.0.1:{port}"),
        database_url,
        tempfile::tempdir().unwrap(),
        || server.exited(),
    )
    .await;
    let (id, _) = calibrated_model(&app, "phi").await;
    let estimates = format!("/v1/models/{id}/estimates");

    // A truncated NIfTI volume named after a patient.
    let nifti = std::fs::read(fixture("nifti/batch.nii.gz")).unwrap();
    let truncated = nifti[..nifti.len() / 2].to_vec();
    let form = images_form(&synthetic().join("batch")).part(
        "image",
        named(truncated, &format!("{}_1970.nii.gz", PATIENTS[0])),
    );
    let r = app.post_form(&estimates, &app.submitter, form).await;
    let problem = expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    // The client is told which file, by position, and what is wrong with it.
    let position = sorted_files(&synthetic().join("batch")).len() + 1;
    expect_detail(
        &problem,
        &format!("image part #{position} (NIfTI): the NIfTI file is truncated"),
    );

    // A PACS export zip whose folders carry a patient's name, with a broken DICOM file.
    let dicom = std::fs::read(fixture("dicom/batch/bat_000.dcm")).unwrap();
    let broken = dicom[..dicom.len() / 3].to_vec();
    let zip = zip_of(&[(format!("{}/SERIES1/IM0001", PATIENTS[1]), broken)]);
    let form = Form::new().part("archive", named(zip, "export.zip"));
    let r = app.post_form(&estimates, &app.submitter, form).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let problem: serde_json::Value = r.json().await.unwrap();
    expect_detail(&problem, "file #1 of the zip (DICOM)");

    // A reference image without its label, named after a patient.
    let png =
        std::fs::read(sorted_files(&synthetic().join("reference/images"))[0].clone()).unwrap();
    let form = Form::new().part("image", named(png, &format!("{}.png", PATIENTS[2])));
    let r = app.put_form(&reference_set(&id), &app.admin, form).await;
    let problem = expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    expect_detail(&problem, "image part #1 has no label");

    app.stop().await;
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("request rejected"),
        "the rejections were not logged:\n{log}"
    );
    for patient in PATIENTS {
        let surname = patient.split('^').next().unwrap();
        assert!(!log.contains(surname), "the log names {patient}:\n{log}");
    }
}

/// The problem names the file as `expected` does (by position) and names no patient.
fn expect_detail(problem: &serde_json::Value, expected: &str) {
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(expected), "{detail:?} lacks {expected:?}");
    for patient in PATIENTS {
        let surname = patient.split('^').next().unwrap();
        assert!(
            !detail.contains(surname),
            "the problem names {patient}: {detail}"
        );
    }
}
