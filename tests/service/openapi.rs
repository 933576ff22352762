//! The committed OpenAPI document must match the one generated from the code.
//! `UPDATE_OPENAPI=1 cargo test --test service openapi` rewrites it.

use crate::common::{each_str, repo};

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
    let declared = each_str(&doc["tags"], "name");
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

/// Constraints the server enforces that the document declares too, so that a client generator or a
/// fuzzer cannot build a schema-valid request the server must refuse.
#[test]
fn server_enforced_constraints_are_declared() {
    let doc = committed();
    let schemas = &doc["components"]["schemas"];
    // ModelSpec::validate accepts 1 or 3 channels, not 2.
    assert_eq!(
        schemas["InputSpec"]["properties"]["channels"]["enum"],
        serde_json::json!([1, 3])
    );
    // The protocol parameters are bounded (Params::checked).
    let params = &schemas["Params"]["properties"];
    for (field, max) in [
        ("support_size", spe::api::dto::MAX_SUPPORT_SIZE),
        ("repetitions", spe::api::dto::MAX_REPETITIONS),
    ] {
        assert_eq!(params[field]["minimum"], 1, "{field}");
        assert_eq!(params[field]["maximum"], max, "{field}");
    }
    // Candidate names follow one pattern (a form and an optional agreement weight).
    assert_eq!(
        schemas["FitSummary"]["properties"]["candidates"]["propertyNames"]["pattern"],
        spe::api::dto::CANDIDATE_PATTERN
    );
    // At least one image (an image part or an archive) in every set or batch ...
    let images = serde_json::json!({"anyOf": [{"required": ["image"]}, {"required": ["archive"]}]});
    for form in ["LabelledSetForm", "BatchForm", "CalibrationForm"] {
        let rules = schemas[form]["allOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{form}"));
        assert!(rules.contains(&images), "{form}: {rules:?}");
    }
    // ... and checkpoints or masks, not both.
    let rules = schemas["CalibrationForm"]["allOf"].as_array().unwrap();
    assert!(rules.contains(&serde_json::json!(
        {"oneOf": [{"required": ["checkpoint"]}, {"required": ["masks"]}]}
    )));
    // The seed fits the int64 its format declares.
    assert_eq!(params["seed"]["maximum"], i64::MAX);
    // PostgreSQL text cannot hold NUL: names the server stores as given say so.
    assert_eq!(
        schemas["PairPoint"]["properties"]["name"]["pattern"],
        r"^[^\x00]*$"
    );
}
