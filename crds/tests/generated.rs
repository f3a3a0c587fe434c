//! The committed CRD manifests under `crds/generated/` match what the types generate.

// An integration-test crate: helpers outside `#[test]` functions fail the test by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

fn generated_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("generated")
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = generated_dir();
    // Bootstrap/refresh path until `cargo xtask crd` exists: `SEI_UPDATE_CRDS=1 cargo test -p sei-crds`.
    let update = std::env::var_os("SEI_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for (name, yaml) in sei_crds::generated_files() {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != yaml {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/generated/ is stale for {stale:?}: run `cargo xtask crd` and commit"
    );
}

#[test]
fn generated_dir_has_exactly_one_file_per_crd() {
    let mut expected: Vec<&str> = sei_crds::generated_files()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    expected.sort_unstable();
    let mut present: Vec<String> = std::fs::read_dir(generated_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("yaml")))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    present.sort_unstable();
    assert_eq!(present, expected, "run `cargo xtask crd` and commit");
}
