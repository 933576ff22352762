//! Helpers shared by the CLI integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// ../shared beside the checkout. CI always has it: there a missing copy is a failure, not a skip.
pub fn shared() -> Option<PathBuf> {
    let dir = repo().join("../shared");
    if dir.join("models/jsrt-heart-unet").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing and CI=true: the shared JSRT tests must run in CI",
            dir.display()
        );
    }
    eprintln!(
        "note: {} is missing; skipping a test that needs the shared JSRT data",
        dir.display()
    );
    None
}

/// Runs the real `spe` binary; panics with its stderr when it fails.
pub fn spe(args: &[&str]) -> String {
    let out = spe_raw(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "spe {args:?} failed:\n{stderr}");
    stderr
}

pub fn spe_raw(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spe"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run spe")
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A path as an owned argument.
pub fn o(p: impl AsRef<Path>) -> String {
    p.as_ref().display().to_string()
}

/// `spe` arguments from `template`, split at white space, with each `{}` replaced by the next of
/// `paths`: `command_line("evaluate --model {} --out {}", &[&model, &out])`.
pub fn command_line(template: &str, paths: &[&Path]) -> Vec<String> {
    let mut paths = paths.iter();
    let args: Vec<String> = template
        .split_whitespace()
        .map(|word| match word {
            "{}" => o(paths.next().expect("fewer paths than {} in the template")),
            _ => word.to_string(),
        })
        .collect();
    assert!(
        paths.next().is_none(),
        "more paths than {{}} in the template"
    );
    args
}

/// Owned arguments as `spe` and `spe_raw` take them.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
