//! The sample resources in `examples/` deserialize into the typed API and cover every mode.

// An integration-test crate: helpers outside `#[test]` functions fail the test by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use sei_crds::{Mode, SeiNode, SeiNodeDeployment};

fn example_docs() -> Vec<(String, serde_yaml::Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("yaml")))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            docs.push((file.file_name().unwrap().to_string_lossy().into_owned(), value));
        }
    }
    docs
}

#[test]
fn examples_parse_into_the_typed_api_and_cover_every_mode() {
    let mut modes = BTreeSet::new();
    let mut fleets = Vec::new();
    for (file, doc) in example_docs() {
        match doc["kind"].as_str() {
            Some("SeiNode") => {
                let node: SeiNode = serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
                modes.insert(node.mode().unwrap_or_else(|e| panic!("{file}: {e}")));
            }
            Some("SeiNodeDeployment") => {
                let snd: SeiNodeDeployment =
                    serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
                snd.spec
                    .template
                    .spec
                    .mode()
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                fleets.push(snd);
            }
            _ => {}
        }
    }
    assert_eq!(
        modes,
        Mode::ALL.into_iter().collect(),
        "one SeiNode example per mode"
    );
    assert!(
        fleets.iter().any(|f| f.spec.genesis.is_some()),
        "a genesis fleet example"
    );
    assert!(
        fleets.iter().any(|f| f.spec.genesis.is_none()),
        "a plain fleet example"
    );
}

#[test]
fn typed_examples_round_trip_without_losing_fields() {
    for (file, doc) in example_docs() {
        let json: serde_json::Value = serde_json::to_value(&doc).unwrap();
        let back = match doc["kind"].as_str() {
            Some("SeiNode") => serde_json::to_value(serde_json::from_value::<SeiNode>(json.clone()).unwrap()),
            Some("SeiNodeDeployment") => {
                serde_json::to_value(serde_json::from_value::<SeiNodeDeployment>(json.clone()).unwrap())
            }
            _ => continue,
        }
        .unwrap();
        // Every field of the example survives (the typed form may add defaults, never drop anything).
        assert_subset(&json, &back, &file, "");
    }
}

fn assert_subset(expected: &serde_json::Value, actual: &serde_json::Value, file: &str, path: &str) {
    match (expected, actual) {
        (serde_json::Value::Object(e), serde_json::Value::Object(a)) => {
            for (k, v) in e {
                let child = a.get(k).unwrap_or_else(|| panic!("{file}: {path}.{k} dropped"));
                assert_subset(v, child, file, &format!("{path}.{k}"));
            }
        }
        (serde_json::Value::Array(e), serde_json::Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{file}: {path}");
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                assert_subset(x, y, file, &format!("{path}[{i}]"));
            }
        }
        // Durations are re-rendered in another unit (`9999h0m0s` becomes `35996400s`): compare their values.
        (serde_json::Value::String(e), serde_json::Value::String(a)) if e != a => {
            let same = e
                .parse::<kube::core::Duration>()
                .ok()
                .zip(a.parse::<kube::core::Duration>().ok());
            assert!(same.is_some_and(|(x, y)| x == y), "{file}: {path}: {e} != {a}");
        }
        _ => assert_eq!(expected, actual, "{file}: {path}"),
    }
}

#[test]
fn spec_helpers_read_the_validator_with_keys_example() {
    let (_, doc) = example_docs()
        .into_iter()
        .find(|(f, _)| f == "seinode-validator-keys.yaml")
        .unwrap();
    let node: SeiNode = serde_yaml::from_value(doc).unwrap();
    assert_eq!(
        node.spec.signing_key_secret().unwrap().secret_name,
        "val-1-signing"
    );
    assert_eq!(node.spec.node_key_secret().unwrap().secret_name, "val-1-node-key");
    assert_eq!(node.spec.operator_key_name(), "node_admin");
    assert_eq!(node.spec.sidecar_port(), 7777);
    assert!(node.spec.snapshot_source().unwrap().s3.is_some());
    assert_eq!(Mode::Validator.role(), "validator");
}
