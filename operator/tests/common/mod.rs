//! Shared pieces of the operator's end-to-end tests: the operator binary as a child process, and the sidecar
//! simulator served in-process on 127.0.0.1.

#![allow(dead_code)] // each test file uses a subset
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support: a failure fails the test

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
        Self::start_with(task_duration, faults, None).await
    }

    /// The simulator with kube-rbac-proxy's check (TokenReview + SubjectAccessReview) in front of it.
    pub(crate) async fn start_behind_proxy(
        task_duration: Duration,
        proxy: sei_tests::sim::RbacProxy,
    ) -> Self {
        Self::start_with(task_duration, vec![], Some(proxy)).await
    }

    async fn start_with(
        task_duration: Duration,
        faults: Vec<sei_tests::sim::FaultSpec>,
        rbac_proxy: Option<sei_tests::sim::RbacProxy>,
    ) -> Self {
        let bucket = tempdir::TempDir::new("sim-bucket");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = sei_tests::sim::Config {
            task_duration,
            bucket_dir: bucket.0.clone(),
            require_token: None,
            faults,
            rbac_proxy,
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
            // The simulator stands in for the sidecar without kube-rbac-proxy (tests that put the proxy check
            // in front of it set SEI_KUBE_RBAC_PROXY_IMAGE).
            .env("SEI_SIDECAR_ALLOW_UNAUTHENTICATED", "true")
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

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; its exit status, if it did.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
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

// ---- Helpers shared by the fault, lifecycle and leader-election tests ----

/// A SeiNode named `name` with `spec` (JSON, as in a manifest).
pub(crate) fn seinode(name: &str, spec: &serde_json::Value) -> sei_crds::SeiNode {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sei.io/v1alpha1",
        "kind": "SeiNode",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// A full node on chain `atlantic-2` running `image`.
pub(crate) fn full_node_spec(image: &str) -> serde_json::Value {
    serde_json::json!({"chainId": "atlantic-2", "image": image, "fullNode": {}})
}

/// The node's phase (`""` when unset).
pub(crate) fn phase(node: &sei_crds::SeiNode) -> &'static str {
    node.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("", |p| p.as_str())
}

/// A wait condition: the node's phase is `want`.
pub(crate) fn in_phase(want: &'static str) -> impl Fn(Option<&sei_crds::SeiNode>) -> bool {
    move |n: Option<&sei_crds::SeiNode>| n.is_some_and(|n| phase(n) == want)
}

/// The node's status as JSON (`null` when absent), for JSON-pointer checks on the journal.
pub(crate) fn status_json(node: &sei_crds::SeiNode) -> serde_json::Value {
    serde_json::to_value(&node.status).unwrap()
}

/// The journal entry (`status.plan.tasks[]`) of task `task` in the node's active plan, if any.
pub(crate) fn plan_task(node: &sei_crds::SeiNode, task: &str) -> Option<serde_json::Value> {
    status_json(node)
        .pointer("/plan/tasks")?
        .as_array()?
        .iter()
        .find(|t| t["name"] == task)
        .cloned()
}

/// Polls `probe` every 200 ms until it gives `Some`, failing with `what` after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the object `name` no longer exists.
pub(crate) async fn wait_gone<K>(api: &kube::Api<K>, name: &str, timeout: Duration)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    eventually(&format!("{name} to be deleted"), timeout, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// Every state of one object seen by a watch, from the moment this is created until it is dropped.
pub(crate) struct Recorder<K> {
    states: std::sync::Arc<std::sync::Mutex<Vec<K>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Recorder<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
{
    /// Starts watching the object `name` (which may not exist yet) and waits until the watch is established.
    pub(crate) async fn start(api: kube::Api<K>, name: &str) -> Self {
        use futures::StreamExt as _;
        let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
        let sink = std::sync::Arc::clone(&states);
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = kube::runtime::watcher(api, config).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(
                        kube::runtime::watcher::Event::Apply(obj)
                        | kube::runtime::watcher::Event::InitApply(obj),
                    ) => {
                        sink.lock().unwrap().push(obj);
                    }
                    Ok(kube::runtime::watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("recorder watch error: {e}"),
                }
            }
        });
        ready_rx.await.unwrap();
        Self { states, task }
    }

    /// What was seen so far, oldest first.
    pub(crate) fn states(&self) -> Vec<K> {
        self.states.lock().unwrap().clone()
    }
}

impl<K> Drop for Recorder<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Operator {
    /// Waits until the operator's log contains `needle`.
    pub(crate) async fn wait_log(&self, needle: &str, timeout: Duration) {
        eventually(
            &format!("{needle:?} in {}", self.log.display()),
            timeout,
            || async { self.log().contains(needle).then_some(()) },
        )
        .await;
    }

    /// The sum of the samples of metric `name` whose labels contain `labels` (e.g. `kind="SeiNode"`); 0 when
    /// absent. Retries while the HTTP server is not up yet.
    pub(crate) async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = eventually("the operator's /metrics", Duration::from_secs(30), || async {
            reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
                .await
                .ok()?
                .text()
                .await
                .ok()
        })
        .await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| {
                series
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                    && series.contains(labels)
            })
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum()
    }

    /// `sei_status_writes_total{kind="SeiNode"}`.
    pub(crate) async fn node_status_writes(&self) -> u64 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a small counter
        let n = self.metric("sei_status_writes_total", "kind=\"SeiNode\"").await as u64;
        n
    }

    /// True while the process has not exited.
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Sim {
    /// The tasks the simulator holds for one node (newest first), each with `executions`.
    pub(crate) async fn node_tasks(&self, ns: &str, name: &str) -> Vec<serde_json::Value> {
        self.node(ns, name).await["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The node's tasks of one type, oldest first.
    pub(crate) async fn tasks_of_type(
        &self,
        ns: &str,
        name: &str,
        task_type: &str,
    ) -> Vec<serde_json::Value> {
        let mut tasks: Vec<_> = self
            .node_tasks(ns, name)
            .await
            .into_iter()
            .filter(|t| t["type"] == task_type)
            .collect();
        tasks.reverse();
        tasks
    }
}

/// A small deterministic PRNG (xorshift64*), so that "random" delays are the same on every run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

impl Operator {
    /// The exit status, once the process has exited by itself.
    pub(crate) fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A SeiNodeDeployment `name` of `replicas` validators that runs a genesis ceremony for chain `<name>-chain`,
/// bounded by `max_duration`.
pub(crate) fn genesis_fleet(name: &str, replicas: i64, max_duration: &str) -> sei_crds::SeiNodeDeployment {
    let chain = format!("{name}-chain");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sei.io/v1alpha1",
        "kind": "SeiNodeDeployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"chainId": chain, "image": "seid:v1", "validator": {}}},
            "genesis": {"chainId": chain, "maxCeremonyDuration": max_duration},
        },
    }))
    .unwrap()
}

/// A Secret `name` holding `data` (key -> bytes).
pub(crate) fn secret(name: &str, data: &[(&str, &[u8])]) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Well-formed key Secrets (fixed test keys) for a validator: `<prefix>-signing` (`priv_validator_key.json`),
/// `<prefix>-node-key` (`node_key.json`), `<prefix>-keyring` (`node_admin.info` and an `*.address`) and
/// `<prefix>-keyring-pass` (`passphrase`), the names the examples use.
pub(crate) fn validator_key_secrets(prefix: &str) -> Vec<k8s_openapi::api::core::v1::Secret> {
    let pub_key = serde_json::json!({"type": "tendermint/PubKeyEd25519", "value": "Jv2yTLKdTfOy0rYGZ6Dh1VvJTq0dPhOw2dHLtKcLxvQ="});
    let priv_key = serde_json::json!({
        "type": "tendermint/PrivKeyEd25519",
        "value": "8XzmpdPV3SFoNMZbF5fCd3Pkm0Ey0gfRzbCG5OQDxEkm/bJMsp1N87LStgZnoOHVW8lOrR0+E7DZ0cu0pwvG9A==",
    });
    let signing = serde_json::json!({"address": "3C7FD1A1F8E6C6E2A1B0C0D0E0F0A1B2C3D4E5F6",
                                     "pub_key": pub_key, "priv_key": priv_key})
    .to_string();
    vec![
        secret(
            &format!("{prefix}-signing"),
            &[("priv_validator_key.json", signing.as_bytes())],
        ),
        node_key_secret(&format!("{prefix}-node-key")),
        secret(
            &format!("{prefix}-keyring"),
            &[
                ("node_admin.info", b"keyring-entry"),
                ("0123456789abcdef0123456789abcdef01234567.address", b"node_admin"),
            ],
        ),
        secret(
            &format!("{prefix}-keyring-pass"),
            &[("passphrase", b"test-passphrase")],
        ),
    ]
}

/// A well-formed node-key Secret `name` (`node_key.json`, a fixed test key).
pub(crate) fn node_key_secret(name: &str) -> k8s_openapi::api::core::v1::Secret {
    let node_key = serde_json::json!({"priv_key": {
        "type": "tendermint/PrivKeyEd25519",
        "value": "8XzmpdPV3SFoNMZbF5fCd3Pkm0Ey0gfRzbCG5OQDxEkm/bJMsp1N87LStgZnoOHVW8lOrR0+E7DZ0cu0pwvG9A==",
    }})
    .to_string();
    secret(name, &[("node_key.json", node_key.as_bytes())])
}

/// Polls until the SeiNode `name` satisfies `cond` (a watch may break while another suite re-installs the
/// shared CRDs), failing with `what` after `timeout`.
pub(crate) async fn wait_node(
    nodes: &kube::Api<sei_crds::SeiNode>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&sei_crds::SeiNode) -> bool,
) -> sei_crds::SeiNode {
    eventually(&format!("{name}: {what}"), timeout, || async {
        nodes.get_opt(name).await.ok().flatten().filter(|n| cond(n))
    })
    .await
}

/// Creates the full node `name` (image `seid:v1`) and waits until it is in phase `want`.
pub(crate) async fn create_full_node(
    nodes: &kube::Api<sei_crds::SeiNode>,
    name: &str,
    want: &'static str,
    timeout: Duration,
) {
    nodes
        .create(
            &kube::api::PostParams::default(),
            &seinode(name, &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    sei_tests::wait_for(nodes, name, in_phase(want), timeout)
        .await
        .unwrap();
}
