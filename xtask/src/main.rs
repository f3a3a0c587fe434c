//! Developer commands: `cargo xtask <command>`.
//!
//! - `cluster up|down|status|env` — the local control plane (runs `hack/cluster.sh`).
//! - `test [cargo test args]`     — brings the local cluster up if needed, runs the whole test suite, and stops
//!   the cluster again if this command started it.
//! - `crd`                        — writes the generated CRD YAML to `crds/generated/` (and `crds/kustomization.yaml`).
//! - `demo`                       — the local cluster plus the operator, with what to try next.
//! - `image [--out DIR]`          — the release binary and its OCI image, without Docker (`hack/image.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  cluster up|down|status|env   manage the local control plane (etcd, kube-apiserver, kube-controller-manager,
                               kube-scheduler, kwok, jaeger on 127.0.0.1; binaries built from Go modules and
                               cached in /var/cache/sei-operator, or $SEI_TESTBIN_CACHE)
  test [ARGS]                  run every test against the local cluster (started if needed, and stopped again
                               if this command started it); ARGS go to `cargo test`
  crd                          write crds/generated/*.yaml from the Rust types
  demo                         start the local cluster and the operator demo
  image [--out DIR]            build the release binary and write its OCI image (layout DIR/oci, tarball
                               DIR/sei-operator.tar; DIR defaults to target/image) with crane, no Docker
";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn cluster(args: &[String]) -> Result<(), String> {
    run(Command::new(root().join("hack").join("cluster.sh")).args(args))
}

fn cluster_is_up() -> bool {
    Command::new(root().join("hack").join("cluster.sh"))
        .arg("status")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn test(args: &[String]) -> Result<(), String> {
    let started = if cluster_is_up() {
        eprintln!("xtask: using the running local cluster");
        false
    } else {
        cluster(&["up".to_owned()])?;
        true
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let result = run(Command::new(cargo)
        .current_dir(root())
        .args(["test", "--workspace", "--all-targets"])
        .args(args)
        .env("SEI_CLUSTER_ENV", root().join(".cluster").join("env")));
    // Doc tests are not part of --all-targets.
    let result = result.and_then(|()| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        run(Command::new(cargo)
            .current_dir(root())
            .args(["test", "--workspace", "--doc"]))
    });
    if started && std::env::var_os("SEI_KEEP_CLUSTER").is_none() {
        cluster(&["down".to_owned()])?;
    }
    result
}

fn crd() -> Result<(), String> {
    let dir = root().join("crds").join("generated");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for (file, yaml) in sei_crds::generated_files() {
        let path = dir.join(file);
        std::fs::write(&path, yaml).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
        files.push(file);
    }
    // The CRDs as a kustomize base, so `kubectl apply -k deploy/` installs them (deploy/kustomization.yaml).
    files.sort_unstable();
    let mut kustomization = String::from(
        "# The generated CRDs as a kustomize base (deploy/ includes it). Written by `cargo xtask crd`.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for file in files {
        kustomization.push_str("  - generated/");
        kustomization.push_str(file);
        kustomization.push('\n');
    }
    let path = root().join("crds").join("kustomization.yaml");
    std::fs::write(&path, kustomization).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn demo() -> Result<(), String> {
    run(&mut Command::new(root().join("hack").join("demo.sh")))
}

/// `cargo build --release -p sei-operator`, then `hack/image.sh` on the binary.
fn image(args: &[String]) -> Result<(), String> {
    let out = match args {
        [] => None,
        [flag, dir] if flag == "--out" => Some(PathBuf::from(dir)),
        _ => return Err(format!("image: unexpected arguments {args:?}\n{USAGE}")),
    };
    let started = std::time::Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(cargo).current_dir(root()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "sei-operator",
        "--bin",
        "sei-operator",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let out = out.unwrap_or_else(|| target.join("image"));
    let revision = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    run(Command::new(root().join("hack").join("image.sh"))
        .arg(target.join("release").join("sei-operator"))
        .arg(&out)
        .env("IMAGE_VERSION", env!("CARGO_PKG_VERSION"))
        .env("IMAGE_SOURCE", env!("CARGO_PKG_REPOSITORY"))
        .env("IMAGE_REVISION", revision))?;
    eprintln!(
        "xtask: image written to {} in {:.0?}",
        out.display(),
        started.elapsed()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("cluster") => cluster(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("crd") => crd(),
        Some("image") => image(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
