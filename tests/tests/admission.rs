//! Admission suite: the real apiserver of the local cluster enforces the CRD schemas and CEL rules.
//!
//! - Every `tests/admission/invalid/NN-<rule>.yaml` breaks exactly one rule and must be rejected (422 or 400)
//!   with a message containing the substring on its first line, `# expect: <substring>`. A file with one
//!   document is created with `dryRun=All`; a file with two documents is an update: the first document is
//!   created for real, then the second replaces it with `dryRun=All` (transition rules such as immutability).
//! - Every `sei.io` resource in `examples/*.yaml` must be accepted (`dryRun=All`).
//!
//! Without a cluster the cluster test is skipped (it fails in CI, see `sei_tests::test_namespace`); the layout
//! checks of the manifest set always run.

// An integration-test crate: helpers outside `#[test]` functions fail the test by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

const EXPECT_PREFIX: &str = "# expect: ";

/// One YAML file: its name, the expected message substring (invalid files only) and its documents as JSON.
struct Manifest {
    file: String,
    expect: Option<String>,
    docs: Vec<Value>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("yaml")))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Manifest {
    let text = std::fs::read_to_string(path).unwrap();
    let expect = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(EXPECT_PREFIX))
        .map(|s| s.trim().to_owned());
    let docs = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect();
    Manifest {
        file: path.file_name().unwrap().to_string_lossy().into_owned(),
        expect,
        docs,
    }
}

fn invalid_manifests() -> Vec<Manifest> {
    yaml_files(&workspace_root().join("tests/admission/invalid"))
        .iter()
        .map(|p| load(p))
        .collect()
}

fn example_manifests() -> Vec<Manifest> {
    yaml_files(&workspace_root().join("examples"))
        .iter()
        .map(|p| load(p))
        .collect()
}

fn is_sei(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("sei.io/"))
}

/// The API of a `sei.io` document's kind in `namespace`.
fn api_for(client: &kube::Client, namespace: &str, doc: &Value) -> Api<DynamicObject> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "SeiNode" => "seinodes",
        "SeiNodeDeployment" => "seinodedeployments",
        other => panic!("no plural known for kind {other}"),
    };
    let gvk = GroupVersionKind::gvk("sei.io", "v1alpha1", kind);
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn dynamic(doc: &Value, name: &str) -> DynamicObject {
    let mut doc = doc.clone();
    doc["metadata"]["name"] = Value::String(name.to_owned());
    serde_json::from_value(doc).unwrap()
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// `Ok(())` when the apiserver rejected with 422/400 and a message containing `expect`, else why not.
fn check_rejection(result: Result<DynamicObject, kube::Error>, expect: &str) -> Result<(), String> {
    match result {
        Ok(_) => Err("accepted".to_owned()),
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
            if status.message.contains(expect) {
                Ok(())
            } else {
                Err(format!(
                    "rejected ({}) without {expect:?}: {}",
                    status.code, status.message
                ))
            }
        }
        Err(e) => Err(format!("unexpected error: {e}")),
    }
}

#[test]
fn invalid_manifests_are_numbered_named_and_say_what_they_expect() {
    let manifests = invalid_manifests();
    assert!(
        manifests.len() >= 30,
        "at least 30 invalid manifests, found {}",
        manifests.len()
    );
    for (i, m) in manifests.iter().enumerate() {
        let prefix = format!("{:02}-", i + 1);
        assert!(
            m.file.starts_with(&prefix),
            "{}: expected to be numbered {prefix}",
            m.file
        );
        assert!(
            m.expect.as_ref().is_some_and(|e| !e.is_empty()),
            "{}: first line must be `# expect: ...`",
            m.file
        );
        assert!(
            matches!(m.docs.len(), 1 | 2),
            "{}: one document (create) or two (update)",
            m.file
        );
        assert!(m.docs.iter().all(is_sei), "{}: only sei.io resources", m.file);
        if let [old, new] = m.docs.as_slice() {
            assert_eq!(old["kind"], new["kind"], "{}: an update keeps the kind", m.file);
        }
    }
}

#[tokio::test]
async fn apiserver_rejects_each_invalid_manifest_naming_the_field_and_accepts_every_example() {
    let Some(ns) = sei_tests::test_namespace("admission").await else {
        return;
    };
    let client = ns.client();
    sei_tests::install_crds(&client).await.unwrap();

    let mut failures = Vec::new();
    let invalid = invalid_manifests();
    for (i, m) in invalid.iter().enumerate() {
        let expect = m.expect.as_deref().unwrap_or_default();
        // Unique names: some cases create their first document for real.
        let name = format!("case-{:02}", i + 1);
        let outcome = match m.docs.as_slice() {
            [doc] => {
                let api = api_for(&client, ns.name(), doc);
                check_rejection(api.create(&dry_run(), &dynamic(doc, &name)).await, expect)
            }
            [old, new] => {
                let api = api_for(&client, ns.name(), old);
                match api.create(&PostParams::default(), &dynamic(old, &name)).await {
                    Err(e) => Err(format!("creating the first document failed: {e}")),
                    Ok(created) => {
                        let mut update = dynamic(new, &name);
                        update.metadata.resource_version = created.metadata.resource_version;
                        check_rejection(api.replace(&name, &dry_run(), &update).await, expect)
                    }
                }
            }
            _ => Err("expected one or two documents".to_owned()),
        };
        if let Err(why) = outcome {
            failures.push(format!("invalid/{}: {why}", m.file));
        }
    }

    let mut examples = 0;
    for m in example_manifests() {
        for doc in m.docs.iter().filter(|d| is_sei(d)) {
            examples += 1;
            let name = doc["metadata"]["name"].as_str().unwrap_or("example").to_owned();
            let api = api_for(&client, ns.name(), doc);
            if let Err(e) = api.create(&dry_run(), &dynamic(doc, &name)).await {
                failures.push(format!("examples/{}: rejected: {e}", m.file));
            }
        }
    }
    assert!(
        examples >= 8,
        "expected at least 8 sei.io examples, found {examples}"
    );

    assert!(
        failures.is_empty(),
        "{} of {} admission cases failed:\n{}",
        failures.len(),
        invalid.len() + examples,
        failures.join("\n")
    );
}
