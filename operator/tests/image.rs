//! The container image: `hack/image.sh` (what `cargo xtask image` runs on the release binary) writes an OCI
//! layout that is read back here: the config (non-root user, the binary as entrypoint, `run` as cmd, the OCI
//! labels), the one layer (the binary and the libraries it loads), and the binary inside runs `--version` with
//! nothing but the image's files. The `Dockerfile` (for users with Docker) must describe the same image.
//!
//! The test builds the image from this test build's (debug) binary: about 3 s once crane is built
//! (`hack/build-crane.sh`, about 10 s cold from the Go module proxy; `.ci/run` builds it before the tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const ENTRYPOINT: &str = "/usr/local/bin/sei-operator";
const USER: &str = "65532:65532";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OCI image layout read back: its image config and its layers (paths of the blobs).
struct Layout {
    config: Value,
    layers: Vec<(String, PathBuf)>,
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    dir.join("blobs").join(alg).join(hex)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

fn read_layout(dir: &Path) -> Layout {
    assert!(
        dir.join("oci-layout").is_file(),
        "{} is an OCI layout",
        dir.display()
    );
    let index = read_json(&dir.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "one image in the layout: {index}");
    assert_eq!(
        manifests[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "an OCI manifest (not a Docker one)"
    );
    let manifest = read_json(&blob(dir, manifests[0]["digest"].as_str().unwrap()));
    let config = read_json(&blob(dir, manifest["config"]["digest"].as_str().unwrap()));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap();
            (l["mediaType"].as_str().unwrap().to_owned(), blob(dir, digest))
        })
        .collect();
    Layout { config, layers }
}

/// The final stage of the Dockerfile: its `FROM` image, `USER`, `ENTRYPOINT`, `CMD` and labels (with `ARG`
/// defaults substituted).
#[derive(Debug, Default)]
struct DockerStage {
    from: String,
    user: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    labels: BTreeMap<String, String>,
}

fn dockerfile_final_stage() -> DockerStage {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // Join continuation lines, drop comments.
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(t);
            lines.push(std::mem::take(&mut current));
        }
    }
    let mut stage = DockerStage::default();
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for line in lines {
        let (instr, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let rest = rest.trim();
        match instr.to_ascii_uppercase().as_str() {
            "FROM" => {
                stage = DockerStage {
                    from: rest.split_whitespace().next().unwrap().to_owned(),
                    ..DockerStage::default()
                };
                args.clear();
            }
            "ARG" => {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                args.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
            "USER" => rest.clone_into(&mut stage.user),
            "ENTRYPOINT" => stage.entrypoint = serde_json::from_str(rest).unwrap(),
            "CMD" => stage.cmd = serde_json::from_str(rest).unwrap(),
            "LABEL" => {
                // key="value" pairs; values have no spaces or quotes inside in this Dockerfile.
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').unwrap();
                    let mut v = v.trim_matches('"').to_owned();
                    for (name, value) in &args {
                        v = v.replace(&format!("${{{name}}}"), value);
                    }
                    stage.labels.insert(k.to_owned(), v);
                }
            }
            _ => {}
        }
    }
    stage
}

#[test]
fn the_image_runs_the_operator_as_nonroot_and_matches_the_dockerfile() {
    let out = TempDir::new("sei-image");
    let started = std::time::Instant::now();
    run(Command::new(root().join("hack").join("image.sh"))
        .arg(env!("CARGO_BIN_EXE_sei-operator"))
        .arg(&out.0)
        .env("IMAGE_VERSION", env!("CARGO_PKG_VERSION"))
        .env("IMAGE_SOURCE", env!("CARGO_PKG_REPOSITORY"))
        .env("IMAGE_REVISION", "test"));
    eprintln!("image built in {:.1?}", started.elapsed());
    // The `docker load` tarball names the image sei-operator:<version> (not the build's local registry).
    let manifest = run(Command::new("tar")
        .arg("-xOf")
        .arg(out.0.join("sei-operator.tar"))
        .arg("manifest.json"));
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!([format!("sei-operator:{}", env!("CARGO_PKG_VERSION"))]),
        "{manifest}"
    );

    // ---- the config
    let layout = read_layout(&out.0.join("oci"));
    let config = &layout.config;
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let c = &config["config"];
    assert_eq!(c["User"], USER, "non-root user: {c}");
    assert_eq!(c["Entrypoint"], serde_json::json!([ENTRYPOINT]), "{c}");
    assert_eq!(c["Cmd"], serde_json::json!(["run"]), "{c}");
    let labels: BTreeMap<String, String> = serde_json::from_value(c["Labels"].clone()).unwrap();
    assert_eq!(
        labels.get("org.opencontainers.image.version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        labels.get("org.opencontainers.image.source").map(String::as_str),
        Some(env!("CARGO_PKG_REPOSITORY"))
    );

    // ---- the Dockerfile describes the same image
    let docker = dockerfile_final_stage();
    assert!(
        docker.from.contains("distroless") && docker.from.ends_with(":nonroot"),
        "the Dockerfile's runtime stage is distroless and non-root: {docker:?}"
    );
    assert_eq!(docker.user, USER, "Dockerfile USER");
    assert_eq!(docker.entrypoint, [ENTRYPOINT], "Dockerfile ENTRYPOINT");
    assert_eq!(docker.cmd, ["run"], "Dockerfile CMD");
    let keys = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&docker.labels), keys(&labels), "the same OCI labels");
    for key in [
        "org.opencontainers.image.version",
        "org.opencontainers.image.source",
        "org.opencontainers.image.title",
        "org.opencontainers.image.licenses",
    ] {
        assert_eq!(docker.labels[key], labels[key], "Dockerfile label {key}");
    }

    // ---- the layer: unpack it and run the binary with the image's files only
    assert_eq!(layout.layers.len(), 1, "one layer");
    let (media_type, layer) = &layout.layers[0];
    assert_eq!(media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
    let fs = TempDir::new("sei-image-rootfs");
    run(Command::new("tar").arg("-xzf").arg(layer).arg("-C").arg(&fs.0));
    let listing = run(Command::new("tar").args(["-tzvf"]).arg(layer));
    let binary_entry = listing
        .lines()
        .find(|l| l.ends_with(" usr/local/bin/sei-operator"))
        .unwrap_or_else(|| panic!("the binary is in the layer:\n{listing}"));
    assert!(binary_entry.starts_with("-rwxr-xr-x"), "{binary_entry}");
    let passwd = std::fs::read_to_string(fs.0.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");

    let want = format!("sei-operator {}", env!("CARGO_PKG_VERSION"));
    // Through the image's own dynamic loader and libraries (works without root).
    let loader = fs.0.join("lib64/ld-linux-x86-64.so.2");
    let version = run(Command::new(&loader)
        .arg("--library-path")
        .arg(fs.0.join("lib/x86_64-linux-gnu"))
        .arg(fs.0.join("usr/local/bin/sei-operator"))
        .arg("--version")
        .env_clear());
    assert!(version.contains(&want), "--version printed {version:?}");
    // As root: chroot into the unpacked image, as user 65532, so every path resolves inside it.
    if run(Command::new("id").arg("-u")).trim() == "0" {
        let version = run(Command::new("chroot")
            .args(["--userspec", USER])
            .arg(&fs.0)
            .arg(ENTRYPOINT)
            .arg("--version")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
        assert!(
            version.contains(&want),
            "--version in the chroot printed {version:?}"
        );
    } else {
        eprintln!("not root: the chroot run of the image is skipped (the loader run above still ran it)");
    }
}
