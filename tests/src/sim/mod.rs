//! The sidecar simulator: one HTTP server on 127.0.0.1 that plays the sidecar (`seictl serve`, reference spec
//! section 5) of any number of nodes, so the operator can run end to end where no pod runs a container.
//!
//! A node `name` in `namespace` is served under `/{namespace}/{name}/v0/...` and created on first use; point the
//! operator's sidecar URL template at `http://127.0.0.1:<port>/{namespace}/{name}`. The binary is
//! `sidecar-sim` (`cargo run -p sei-tests --bin sidecar-sim -- --help` documents flags, faults and endpoints);
//! tests start it as a child process with [`SimProcess`].
//!
//! The contract it keeps: idempotent submit by id (unknown id: run 1; running or completed: no-op; failed: run
//! again with `run + 1`), task states running/completed/failed, 201/400/404/204, `healthz` 503 until a
//! `mark-ready` completes, `node-id` 500 until `generate-identity` or `config-apply` ran (the latter creates the node key, as `seid init`
//! does), the applied config (`config-apply` intent, `config-patch` files) in the admin view of a node. Every task stays `running` for the task
//! duration. The genesis tasks exchange real artifacts through a directory standing in for the genesis bucket
//! ([`genesis`]). State lives in memory: restarting the process forgets every node and task (the bucket
//! directory stays).

pub mod faults;
pub mod genesis;
pub mod rbac_proxy;
pub mod state;

mod exec;
mod http;
mod ops;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

pub use self::faults::{FaultSpec, NodeRef, Selector};
pub use self::http::router;
pub use self::rbac_proxy::RbacProxy;
pub use self::state::{Sim, TASK_TYPES};

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long every task stays `running` (unless a `duration` fault says otherwise).
    pub task_duration: Duration,
    /// The directory standing in for the genesis bucket.
    pub bucket_dir: PathBuf,
    /// When set, sidecar requests (except the probes) must carry `Authorization: Bearer <file content>`; the
    /// file is re-read on every request, so tests can rotate the token.
    pub require_token: Option<PathBuf>,
    /// Faults installed at startup.
    pub faults: Vec<FaultSpec>,
    /// When set, every sidecar request passes kube-rbac-proxy's check first (TokenReview and
    /// SubjectAccessReview against a real API server, see [`rbac_proxy`]).
    pub rbac_proxy: Option<RbacProxy>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            task_duration: Duration::from_millis(200),
            bucket_dir: std::env::temp_dir().join(format!("sidecar-sim-{}", std::process::id())),
            require_token: None,
            faults: Vec::new(),
            rbac_proxy: None,
        }
    }
}

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let sim = Arc::new(Sim::new(config)?);
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving")
}

/// A `sidecar-sim` child process, killed when dropped.
pub struct SimProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its bucket directory (passed with `--bucket-dir`).
    pub bucket_dir: PathBuf,
    child: Child,
}

impl SimProcess {
    /// Starts the binary `bin` (in integration tests: `env!("CARGO_BIN_EXE_sidecar-sim")`) on a free port with
    /// `args`, and waits for it to print its address. Its log level is `SIDECAR_SIM_LOG` (default `warn`).
    pub fn start(bin: &Path, bucket_dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--bucket-dir"])
            .arg(bucket_dir)
            .args(args)
            // Quiet by default: the child's stderr is the test's; SIDECAR_SIM_LOG=info shows every task.
            .env("RUST_LOG", std::env::var("SIDECAR_SIM_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the address line")?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("sidecar-sim printed {line:?} instead of its address");
        };
        let addr = addr.parse().with_context(|| format!("address {addr:?}"))?;
        Ok(Self {
            addr,
            bucket_dir: bucket_dir.to_owned(),
            child,
        })
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The sidecar URL template for the operator's client.
    pub fn url_template(&self) -> String {
        format!("http://{}/{{namespace}}/{{name}}", self.addr)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
