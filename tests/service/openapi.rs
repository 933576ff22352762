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

/// The document as clients read it (the committed file; the test above keeps it equal to the code's).
fn committed() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("openapi/openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn operations(doc: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((format!("{} {path}", method.to_uppercase()), op));
        }
    }
    out
}

#[test]
fn operations_have_unique_readable_ids_and_one_declared_tag() {
    let doc = committed();
    let declared: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for (label, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default();
        // lowerCamelCase: what generators turn into method names without mangling.
        assert!(
            id.len() > 3
                && id.starts_with(|c: char| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "{label}: operationId {id:?} is not lowerCamelCase"
        );
        assert!(
            ids.insert(id.to_string()),
            "{label}: operationId {id:?} is used twice"
        );
        let tags: Vec<&str> = op["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        assert!(
            tags.len() == 1 && declared.contains(&tags[0]),
            "{label}: tags {tags:?} are not one of {declared:?}"
        );
    }
}

#[test]
fn every_error_response_is_the_shared_problem_schema() {
    let doc = committed();
    let mut errors = 0;
    for (label, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            let content = &response["content"];
            if let Some(problem) = content.get("application/problem+json") {
                errors += 1;
                assert_eq!(
                    problem["schema"]["$ref"], "#/components/schemas/Problem",
                    "{label} {status}"
                );
            } else {
                // Only readiness reports its failure as a Health body, not a problem.
                assert!(
                    !status.starts_with('4') && !status.starts_with('5')
                        || label == "GET /readyz" && status == "503",
                    "{label} {status} is an error without a problem+json body"
                );
            }
        }
    }
    assert!(errors > 50, "only {errors} problem responses");
}

/// README "Problem types" lists exactly the problem types the code can send, each with its status.
#[test]
fn readme_lists_every_problem_type_with_its_status() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let listed: std::collections::BTreeMap<String, u16> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `urn:spe:problem:"))
        .map(|rest| {
            let (slug, rest) = rest.split_once("` | ").unwrap();
            let status = rest.split(' ').next().unwrap().parse().unwrap();
            (format!("urn:spe:problem:{slug}"), status)
        })
        .collect();
    let code: std::collections::BTreeMap<String, u16> = spe::api::error::ProblemType::ALL
        .iter()
        .map(|p| (p.uri().to_string(), p.status().as_u16()))
        .collect();
    assert_eq!(listed, code);
    let documented: std::collections::BTreeSet<String> = committed()["components"]["schemas"]
        ["ProblemType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(documented, code.keys().cloned().collect());
}
