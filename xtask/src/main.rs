//! Developer commands: `cargo xtask <command>`.
//!
//! - `cluster up|down|status|env` — the local control plane (runs `hack/cluster.sh`).
//! - `test [cargo test args]`     — brings the local cluster up if needed, runs the whole test suite, and stops
//!   the cluster again if this command started it.
//! - `crd`                        — writes the generated CRD YAML to `crds/generated/`.
//! - `demo`                       — the local cluster plus the operator, with what to try next.

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
    for (file, yaml) in sei_crds::generated_files() {
        let path = dir.join(file);
        std::fs::write(&path, yaml).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn demo() -> Result<(), String> {
    run(&mut Command::new(root().join("hack").join("demo.sh")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("cluster") => cluster(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("crd") => crd(),
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
