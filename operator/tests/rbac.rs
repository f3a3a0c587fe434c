//! `deploy/` on the real local cluster.
//!
//! Each test applies what `kubectl apply -k deploy/` applies (the output of `kubectl kustomize deploy/`, from the
//! cluster's own kubectl), moved into the test's namespace so tests can run side by side: namespaced objects go
//! to the test namespace, which gets the labels of `deploy/namespace.yaml` (Pod Security `restricted`),
//! cluster-scoped names get the namespace as suffix, and the CRDs (checked to be in the output) are the ones
//! the harness installs. Then:
//! - [`the_deploy_is_admitted_under_restricted_and_its_rbac_runs_a_node`]: the Deployment's pods are admitted
//!   by the API server's PodSecurity check, and the operator, authenticated as the deployed ServiceAccount (a
//!   real token from the TokenRequest API), takes a node from created to Running and deletes it with its PVC;
//!   the PrometheusRule's alerts name only series that operator exports.
//! - [`the_sidecar_proxy_admits_the_operator_through_token_and_access_reviews`]: kube-rbac-proxy's check in front
//!   of the sidecar simulator, with the node pods' identity, against the real API server; without the
//!   `seinodetasks` rule the operator gets 403s, reported as a retryable configuration error, and the node
//!   reaches Running once the deployed rule is in place.
//! - [`the_operator_refuses_unauthenticated_sidecars_unless_allowed`]: secure by default.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope, pinned_kind};
use sei_crds::SeiNode;
use serde_json::{Value, json};

use common::{Operator, Sim, in_phase, seinode, setup};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `kubectl kustomize <dir>` with the local cluster's kubectl.
fn kustomize(ns: &sei_tests::TestNamespace, dir: &str) -> Vec<Value> {
    let bin = ns
        .env()
        .vars
        .get("SEI_CLUSTER_BIN")
        .map_or_else(|| PathBuf::from("kubectl"), |d| PathBuf::from(d).join("kubectl"));
    let out = Command::new(bin)
        .arg("kustomize")
        .arg(root().join(dir))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

/// The objects of `deploy/` applied in the test namespace; the cluster-scoped ones are deleted when dropped.
struct Deployed {
    /// Every object as applied (after the move), by kind.
    objects: Vec<(ApiResource, bool, Value)>,
    env: sei_tests::ClusterEnv,
}

impl Deployed {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|(ar, _, _)| ar.kind == kind)
            .map(|(_, _, o)| o)
            .collect()
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        self.all(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("deploy/ has no {kind} {name}"))
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let cluster_scoped: Vec<(ApiResource, String)> = self
            .objects
            .iter()
            .filter(|(_, namespaced, _)| !namespaced)
            .map(|(ar, _, o)| (ar.clone(), o["metadata"]["name"].as_str().unwrap().to_owned()))
            .collect();
        let env = self.env.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = env.client().await.unwrap();
                for (ar, name) in cluster_scoped {
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                }
            });
        })
        .join();
    }
}

/// Moves one object of `deploy/` into namespace `ns` (see the module docs).
fn relocate(obj: &mut Value, namespaced: bool, ns: &str) {
    let suffixed = |v: &Value| json!(format!("{}-{ns}", v.as_str().unwrap()));
    if namespaced {
        obj["metadata"]["namespace"] = json!(ns);
    } else {
        obj["metadata"]["name"] = suffixed(&obj["metadata"]["name"]);
    }
    if obj["roleRef"]["kind"] == "ClusterRole" {
        obj["roleRef"]["name"] = suffixed(&obj["roleRef"]["name"]);
    }
    // (`obj["subjects"]` would insert a null field into objects that have none.)
    for subject in obj
        .get_mut("subjects")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        subject["namespace"] = json!(ns);
    }
}

/// Applies `deploy/` into the test namespace (server-side apply, as `kubectl apply --server-side -k` does).
/// `edit` may change an object (as relocated) before it is applied.
async fn apply_deploy(ns: &sei_tests::TestNamespace, edit: impl Fn(&mut Value)) -> Deployed {
    let admin = ns.client();
    let mut crds = BTreeSet::new();
    // Built first, so that what was applied is cleaned up also when a later step fails.
    let mut deployed = Deployed {
        objects: Vec::new(),
        env: ns.env().clone(),
    };
    for mut obj in kustomize(ns, "deploy") {
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), obj["apiVersion"].as_str().unwrap().to_owned()),
        };
        match kind.as_str() {
            "CustomResourceDefinition" => {
                crds.insert(obj["metadata"]["name"].as_str().unwrap().to_owned());
                continue;
            }
            "Namespace" => {
                // The test namespace takes the deployed namespace's labels (Pod Security).
                let labels = obj["metadata"]["labels"].clone();
                let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name(), "labels": labels}});
                Api::<Namespace>::all(admin.clone())
                    .patch(
                        ns.name(),
                        &PatchParams::apply("sei-tests-deploy"),
                        &Patch::Apply(&patch),
                    )
                    .await
                    .unwrap();
                continue;
            }
            _ => {}
        }
        let (ar, caps) = pinned_kind(&admin, &GroupVersionKind::gvk(&group, &version, &kind))
            .await
            .unwrap_or_else(|e| panic!("discovering {kind}: {e}"));
        let namespaced = caps.scope == Scope::Namespaced;
        relocate(&mut obj, namespaced, ns.name());
        edit(&mut obj);
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(admin.clone(), ns.name(), &ar)
        } else {
            Api::all_with(admin.clone(), &ar)
        };
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        api.patch(
            &name,
            &PatchParams::apply("sei-tests-deploy").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
        deployed.objects.push((ar, namespaced, obj));
    }
    let mut generated: BTreeSet<String> = BTreeSet::new();
    for (_, yaml) in sei_crds::generated_files() {
        for doc in yaml_docs(&yaml) {
            generated.insert(doc["metadata"]["name"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        crds, generated,
        "deploy/ (through crds/kustomization.yaml) installs every CRD: run `cargo xtask crd`"
    );
    deployed
}

/// A token of ServiceAccount `sa` (TokenRequest API, 1 h).
async fn token(admin: &Client, ns: &str, sa: &str) -> String {
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap()
}

/// The admin kubeconfig with its user replaced by `token`, written to a file removed when dropped.
struct TokenKubeconfig(PathBuf);

impl TokenKubeconfig {
    fn new(env: &sei_tests::ClusterEnv, token: &str, tag: &str) -> Self {
        let mut kubeconfig: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&env.kubeconfig).unwrap()).unwrap();
        kubeconfig["users"] = json!([{"name": "admin", "user": {"token": token}}]);
        let path =
            std::env::temp_dir().join(format!("sei-{tag}-{}.kubeconfig", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TokenKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits until the Deployment's pods exist (admitted) and run.
async fn wait_admitted(ns: &sei_tests::TestNamespace, deployment: &Value) {
    let want = deployment["spec"]["replicas"].as_i64().unwrap();
    let pods = ns.api::<Pod>();
    let selector = "app.kubernetes.io/name=sei-operator";
    common::eventually(
        &format!("{want} operator pods admitted and Running in {}", ns.name()),
        Duration::from_secs(60),
        || async {
            let list = pods.list(&ListParams::default().labels(selector)).await.unwrap();
            let running = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (i64::try_from(running).unwrap() >= want).then_some(())
        },
    )
    .await;
    let deployed = ns.api::<Deployment>().get("sei-operator").await.unwrap();
    let failures: Vec<String> = deployed
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.reason.as_deref() == Some("FailedCreate"))
        .map(|c| c.message.unwrap_or_default())
        .collect();
    assert!(
        failures.is_empty(),
        "the ReplicaSet could not create pods: {failures:?}"
    );
}

/// The series a `/metrics` page can have: each family (`# TYPE`) with its sample suffixes.
fn exported_series(metrics: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["", "_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

/// The operator metrics (`sei_*`) each alert of the PrometheusRule names.
fn alert_metrics(rule: &Value) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            let mut names = Vec::new();
            let mut word = String::new();
            for c in expr.chars().chain(std::iter::once(' ')) {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    word.push(c);
                } else {
                    if word.starts_with("sei_") {
                        names.push(word.clone());
                    }
                    word.clear();
                }
            }
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap().to_owned();
            out.push((name, names));
        }
    }
    out
}

/// The ServiceMonitor scrapes the deployed metrics Service, and every alert names only series `metrics` has.
fn check_monitoring(ns: &sei_tests::TestNamespace, deployed: &Deployed, metrics: &str) {
    let docs = kustomize(ns, "deploy/monitoring");
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let (monitor, rule) = (find("ServiceMonitor"), find("PrometheusRule"));
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let service = deployed.one("Service", "sei-operator-metrics");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the metrics Service"
        );
    }
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        assert!(
            ports.contains(&&endpoint["port"]),
            "endpoint port {} is a Service port",
            endpoint["port"]
        );
    }
    // Families with samples in this operator's /metrics, and every family it registers (one without samples
    // yet, such as reconcile errors before the first error, is absent from the exposition).
    let mut exported = exported_series(metrics);
    let declared = sei_operator::metrics::FAMILIES
        .iter()
        .map(|(name, kind)| ["# TYPE ", name, " ", kind, "\n"].concat())
        .collect::<String>();
    exported.extend(exported_series(&declared));
    assert!(
        exported.len() > 10,
        "the operator exports its families:\n{metrics}"
    );
    let alerts = alert_metrics(rule);
    assert!(!alerts.is_empty());
    for (alert, names) in alerts {
        if alert == "SeiOperatorDown" {
            continue; // `up` is Prometheus's own series
        }
        assert!(!names.is_empty(), "alert {alert} names an operator metric");
        for name in names {
            assert!(
                exported.contains(&name),
                "alert {alert} uses {name}, which the operator does not export ({exported:?})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_is_admitted_under_restricted_and_its_rbac_runs_a_node() {
    let Some(ns) = setup("deploy").await else { return };
    let admin = ns.client();
    let deployed = apply_deploy(&ns, |_| {}).await;

    // ---- Pod Security: enforced on the namespace, and the Deployment's pods pass it.
    let labels = Api::<Namespace>::all(admin.clone())
        .get(ns.name())
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let lax: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lax"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let refused = ns
        .api::<Pod>()
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &lax,
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("violates PodSecurity")),
        "a pod without a security context is refused in the namespace: {refused:?}"
    );
    let deployment = deployed.one("Deployment", "sei-operator");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0]["securityContext"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532, "the image's user");
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["seccompProfile"]["type"], "RuntimeDefault");
    wait_admitted(&ns, deployment).await;
    assert!(!deployed.all("PodDisruptionBudget").is_empty() && !deployed.all("NetworkPolicy").is_empty());

    // ---- The operator as the deployed ServiceAccount runs a node from created to deleted.
    let kubeconfig = TokenKubeconfig::new(
        ns.env(),
        &token(&admin, ns.name(), "sei-operator").await,
        "deploy",
    );
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let op = Operator::start(ns.env(), ns.name(), &sim, &[("KUBECONFIG", kubeconfig.path())]);
    let nodes = ns.api::<SeiNode>();
    nodes
        .create(
            &PostParams::default(),
            &seinode("rpc", &common::full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    let running = sei_tests::wait_for(&nodes, "rpc", in_phase("Running"), Duration::from_secs(60)).await;
    assert!(running.is_ok(), "{running:?}\n{}", op.log());

    check_monitoring(&ns, &deployed, &op.metrics().await);

    nodes.delete("rpc", &DeleteParams::default()).await.unwrap();
    common::wait_gone(&nodes, "rpc", Duration::from_secs(20)).await;
    let pvc = ns
        .api::<PersistentVolumeClaim>()
        .get_opt("data-rpc")
        .await
        .unwrap();
    assert!(
        pvc.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "the data PVC is deleted"
    );
    assert!(
        !op.log().to_lowercase().contains("forbidden"),
        "no API call was forbidden:\n{}",
        op.log()
    );
}

/// The `seinodetasks` rule of the operator's ClusterRole (what kube-rbac-proxy checks).
fn is_sidecar_rule(rule: &Value) -> bool {
    rule["resources"]
        .as_array()
        .is_some_and(|r| r.contains(&json!("seinodetasks")))
}

/// kube-rbac-proxy's check with the identity of the node pods: a ServiceAccount `sei-node` bound to the deployed
/// `sei-node-rbac-proxy` ClusterRole (the binding joins `deployed`, to be deleted with it).
async fn node_pod_proxy(ns: &sei_tests::TestNamespace, deployed: &mut Deployed) -> sei_tests::sim::RbacProxy {
    let admin = ns.client();
    let node_sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "sei-node"}})).unwrap();
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &node_sa)
        .await
        .unwrap();
    let proxy_role = deployed.one("ClusterRole", &format!("sei-node-rbac-proxy-{}", ns.name()));
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("sei-node-rbac-proxy-{}", ns.name())},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": proxy_role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": "sei-node", "namespace": ns.name()}],
    });
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(binding.clone()).unwrap(),
        )
        .await
        .unwrap();
    deployed
        .objects
        .push((ApiResource::erase::<ClusterRoleBinding>(&()), false, binding));
    let kubeconfig = TokenKubeconfig::new(ns.env(), &token(&admin, ns.name(), "sei-node").await, "proxy");
    sei_tests::sim::RbacProxy::from_kubeconfig(&kubeconfig.0)
        .await
        .unwrap()
}

/// The operator with the deployed ServiceAccount's token for the API and for the sidecars, the deployed platform
/// config (kube-rbac-proxy rendered) and no permission to reach sidecars unauthenticated; and its files.
async fn operator_behind_proxy(
    ns: &sei_tests::TestNamespace,
    deployed: &Deployed,
    sim: &Sim,
) -> (Operator, (TokenKubeconfig, common::tempdir::TempDir)) {
    let op_token = token(&ns.client(), ns.name(), "sei-operator").await;
    let kubeconfig = TokenKubeconfig::new(ns.env(), &op_token, "operator");
    let dir = common::tempdir::TempDir::new("sei-proxy-op");
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, &op_token).unwrap();
    let config_file = dir.0.join("config.yaml");
    let config = deployed.one("ConfigMap", "sei-operator-config")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(
        config.contains("kubeRBACProxy"),
        "the deployed config renders kube-rbac-proxy:\n{config}"
    );
    std::fs::write(&config_file, config).unwrap();
    let op = Operator::start(
        ns.env(),
        ns.name(),
        sim,
        &[
            ("KUBECONFIG", kubeconfig.path()),
            ("SEI_CONTROLLER_CONFIG", config_file.to_str().unwrap()),
            ("SEI_SIDECAR_TOKEN_PATH", token_file.to_str().unwrap()),
            ("SEI_SIDECAR_ALLOW_UNAUTHENTICATED", "false"),
        ],
    );
    (op, (kubeconfig, dir))
}

/// Applies the operator's ClusterRole with the rules of deploy/rbac.yaml as they are.
async fn grant_deployed_operator_role(ns: &sei_tests::TestNamespace, deployed: &Deployed) {
    let operator_role = format!("sei-operator-{}", ns.name());
    let role = deployed.one("ClusterRole", &operator_role);
    let roles: Api<DynamicObject> = Api::all_with(
        ns.client(),
        &deployed
            .objects
            .iter()
            .find(|(ar, _, _)| ar.kind == "ClusterRole")
            .unwrap()
            .0,
    );
    let mut full = role.clone();
    let rbac = yaml_docs(&std::fs::read_to_string(root().join("deploy/rbac.yaml")).unwrap());
    let deployed_role = rbac
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "sei-operator")
        .unwrap();
    full["rules"] = deployed_role["rules"].clone();
    roles
        .patch(
            &operator_role,
            &PatchParams::apply("sei-tests-deploy").force(),
            &Patch::Apply(&full),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_proxy_admits_the_operator_through_token_and_access_reviews() {
    let Some(ns) = setup("proxy").await else { return };
    let operator_role = format!("sei-operator-{}", ns.name());
    // First without the rule the proxy's access check needs.
    let mut deployed = apply_deploy(&ns, |obj| {
        if obj["kind"] == "ClusterRole" && obj["metadata"]["name"] == operator_role.as_str() {
            obj["rules"]
                .as_array_mut()
                .unwrap()
                .retain(|r| !is_sidecar_rule(r));
        }
    })
    .await;

    let proxy = node_pod_proxy(&ns, &mut deployed).await;
    let sim = Sim::start_behind_proxy(Duration::from_millis(50), proxy.clone()).await;
    let (op, _files) = operator_behind_proxy(&ns, &deployed, &sim).await;
    let user = format!("system:serviceaccount:{}:sei-operator", ns.name());
    let nodes = ns.api::<SeiNode>();
    nodes
        .create(
            &PostParams::default(),
            &seinode("rpc", &common::full_node_spec("seid:v1")),
        )
        .await
        .unwrap();

    // ---- Without the rule: 403 from the proxy, a clear configuration error, and nothing fails.
    common::eventually(
        "a 403 from the proxy for the operator",
        Duration::from_secs(60),
        || async {
            proxy
                .decisions()
                .iter()
                .any(|d| d.status == 403 && d.user.as_deref() == Some(user.as_str()))
                .then_some(())
        },
    )
    .await;
    op.wait_log(
        "refused access (403 from kube-rbac-proxy)",
        Duration::from_secs(30),
    )
    .await;
    assert!(
        op.log().contains("seinodetasks.sei.io"),
        "the error names the missing permission:\n{}",
        op.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node = nodes.get("rpc").await.unwrap();
    let status = common::status_json(&node);
    assert_ne!(
        common::phase(&node),
        "Failed",
        "a 403 is not a terminal failure: {status:#}"
    );
    let failed: Vec<&Value> = status
        .pointer("/plan/tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "Failed")
        .collect();
    assert!(failed.is_empty(), "no task failed on a 403: {failed:?}");

    // ---- With the deployed rule: the same plan goes on to Running, every call reviewed and allowed.
    grant_deployed_operator_role(&ns, &deployed).await;
    let running = sei_tests::wait_for(&nodes, "rpc", in_phase("Running"), Duration::from_secs(90)).await;
    assert!(running.is_ok(), "{running:?}\n{}", op.log());
    let decisions = proxy.decisions();
    let allowed: BTreeSet<&str> = decisions
        .iter()
        .filter(|d| d.status == 200 && d.user.as_deref() == Some(user.as_str()))
        .map(|d| d.verb.as_str())
        .collect();
    assert!(
        allowed.contains("create") && allowed.contains("get"),
        "the proxy authenticated and authorized the operator's submits and polls: {decisions:?}"
    );
    let by_status: BTreeMap<u16, usize> = decisions.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.status).or_default() += 1;
        m
    });
    eprintln!("kube-rbac-proxy decisions by status: {by_status:?}");
}

#[test]
fn the_operator_refuses_unauthenticated_sidecars_unless_allowed() {
    // No cluster is needed: the platform check comes before the first API call.
    let out = Command::new(env!("CARGO_BIN_EXE_sei-operator"))
        .arg("run")
        .env_clear()
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("SEI_LEADER_ELECT", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "it must not start:\n{stdout}\n{stderr}");
    let text = format!("{stdout}{stderr}");
    assert!(
        text.contains("SEI_KUBE_RBAC_PROXY_IMAGE") && text.contains("SEI_SIDECAR_ALLOW_UNAUTHENTICATED=true"),
        "the refusal names both settings:\n{text}"
    );
}
