//! The committed OpenAPI document must match the one generated from the code.
//! `UPDATE_OPENAPI=1 cargo test --test service openapi` rewrites it.

use crate::common::repo;

#[test]
fn openapi_document_has_not_drifted() {
    let generated = serde_json::to_string_pretty(&spe::api::openapi()).unwrap() + "\n";
    let path = repo().join("openapi/openapi.json");
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the code: run `UPDATE_OPENAPI=1 cargo test --test service openapi` and commit it",
        path.display()
    );
}
