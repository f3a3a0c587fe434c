//! Shared pieces of the operator's end-to-end tests: the operator binary as a child process, and the sidecar
//! simulator served in-process on 127.0.0.1.

#![allow(dead_code)] // each test file uses a subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sei_tests::{ClusterEnv, TestNamespace};

/// The sidecar simulator, served on a free 127.0.0.1 port until dropped.
pub(crate) struct Sim {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) bucket: tempdir::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) mod tempdir {
    /// A directory removed when dropped.
    pub(crate) struct TempDir(pub(crate) std::path::PathBuf);
    impl TempDir {
        pub(crate) fn new(prefix: &str) -> Self {
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
}

impl Sim {
    pub(crate) async fn start(task_duration: Duration, faults: Vec<sei_tests::sim::FaultSpec>) -> Self {
        let bucket = tempdir::TempDir::new("sim-bucket");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = sei_tests::sim::Config {
            task_duration,
            bucket_dir: bucket.0.clone(),
            require_token: None,
            faults,
        };
        tokio::spawn(async move {
            let _ = sei_tests::sim::serve(listener, config, async move {
                let _ = rx.await;
            })
            .await;
        });
        Self {
            addr,
            bucket,
            stop: Some(tx),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn url_template(&self) -> String {
        format!("http://{}/{{namespace}}/{{name}}", self.addr)
    }

    /// The simulator's admin view of one node.
    pub(crate) async fn node(&self, ns: &str, name: &str) -> serde_json::Value {
        reqwest::get(format!("{}/admin/nodes/{ns}/{name}", self.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every task the simulator has seen.
    pub(crate) async fn tasks(&self) -> serde_json::Value {
        reqwest::get(format!("{}/admin/tasks", self.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Installs faults.
    pub(crate) async fn fault(&self, body: serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/admin/faults", self.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "installing fault {body}: {}",
            resp.status()
        );
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The operator binary, running against the local cluster in one namespace, killed when dropped.
pub(crate) struct Operator {
    child: Child,
    pub(crate) http_port: u16,
    pub(crate) log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Operator {
    pub(crate) fn start(env: &ClusterEnv, namespace: &str, sim: &Sim, extra: &[(&str, &str)]) -> Self {
        let http_port = free_port();
        let log = std::env::temp_dir().join(format!(
            "sei-operator-{namespace}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sei-operator"));
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &env.kubeconfig)
            .env("SEI_NAMESPACE", namespace)
            .env("SEI_LEASE_NAMESPACE", namespace)
            .env("SEI_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("SEI_SIDECAR_URL_TEMPLATE", sim.url_template())
            .env("SEI_SIDECAR_TIMEOUT", "2s")
            .env(
                "SEI_LOG",
                std::env::var("SEI_TEST_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting sei-operator");
        Self {
            child,
            http_port,
            log,
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The operator's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- operator log ({}) ----\n{}", self.log.display(), self.log());
        }
    }
}

/// A namespace with the CRDs installed, or `None` when the cluster is absent outside CI.
pub(crate) async fn setup(prefix: &str) -> Option<TestNamespace> {
    let ns = sei_tests::test_namespace(prefix).await?;
    sei_tests::install_crds(&ns.client())
        .await
        .expect("installing the CRDs");
    Some(ns)
}
