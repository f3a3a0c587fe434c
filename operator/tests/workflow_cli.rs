//! `sei-operator workflow validate` without a cluster: the same check as admission (issue 12). Every invalid
//! template of `tests/data/invalid-templates.yaml` is reported with its expected message, one problem per
//! document; every example and built-in validates.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers: a failure fails the test

use std::process::Command;

fn validate(files: &[std::path::PathBuf]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sei-operator"))
        .args(["workflow", "validate"])
        .args(files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn every_invalid_template_is_reported_with_its_message() {
    let file = root().join("operator/tests/data/invalid-templates.yaml");
    let (ok, text) = validate(std::slice::from_ref(&file));
    assert!(!ok, "{text}");
    let expected: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split("test.sei.io/expect: \"").nth(1))
        .map(|rest| rest.split("\"}}").next().unwrap().replace("\\\"", "\""))
        .collect();
    assert!(expected.len() >= 20, "{expected:?}");
    let problems: Vec<&str> = text.lines().filter(|l| l.contains("workflow `")).collect();
    assert_eq!(
        problems.len(),
        expected.len(),
        "one problem per document:\n{text}"
    );
    for (want, got) in expected.iter().zip(&problems) {
        assert!(got.contains(want.as_str()), "expected `{want}` in: {got}");
    }
}

#[test]
fn the_builtins_and_the_examples_validate() {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["workflows/definitions", "examples/workflows"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        files.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml")),
        );
    }
    files.sort();
    assert!(files.len() >= 6);
    let (ok, text) = validate(&files);
    assert!(ok, "{text}");
}
