//! End-to-end, workflows as a Kubernetes API (issue 12): WorkflowTemplates refused at admission by the
//! operator's webhook with the compiler's message, the `Valid` condition, hot reload (a running plan finishes
//! as compiled; the next uses the edit), and WorkflowRuns that run as their target's plan.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers: a failure fails the test

mod common;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PostParams};
use sei_crds::{SeiNode, WorkflowRun, WorkflowTemplate};
use serde_json::{Value, json};

use common::tempdir::TempDir;
use common::{Operator, Sim, eventually, full_node_spec, in_phase, seinode, setup};

const WAIT: Duration = Duration::from_secs(90);

/// A CA and a serving certificate for 127.0.0.1 in `dir` (`tls.crt`, `tls.key`), made by
/// `hack/webhook-certs.sh` (the demo's too); the CA bundle (PEM).
fn webhook_certs(dir: &std::path::Path) -> String {
    let script = sei_tests::workspace_root().join("hack/webhook-certs.sh");
    let out = Command::new(script).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "webhook-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("ca.crt")).unwrap()
}

/// The operator with its webhook served, registered for WorkflowTemplates of `namespace` only; the
/// registration is deleted when dropped.
struct Webhook {
    api: Api<ValidatingWebhookConfiguration>,
    name: String,
    _certs: TempDir,
}

impl Webhook {
    async fn register(client: kube::Client, namespace: &str, port: u16, certs: TempDir, ca: &str) -> Self {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
        let name = format!("sei-operator-{namespace}");
        let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "workflowtemplates.sei.io",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/validate-workflowtemplate"),
                },
                "rules": [{"apiGroups": ["sei.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                           "resources": ["workflowtemplates"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }],
        }))
        .unwrap();
        let mut config = config;
        config.webhooks.as_mut().unwrap()[0].client_config.ca_bundle =
            Some(k8s_openapi::ByteString(ca.as_bytes().to_vec()));
        api.create(&PostParams::default(), &config).await.unwrap();
        Self {
            api,
            name,
            _certs: certs,
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let (api, name) = (self.api.clone(), self.name.clone());
        // Best effort from a destructor: a leftover registration only matches its (deleted) namespace.
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move { api.delete(&name, &DeleteParams::default()).await.ok() })
        })
        .join()
        .ok();
    }
}

fn template(name: &str, spec: &Value) -> WorkflowTemplate {
    serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "WorkflowTemplate",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The invalid templates of `tests/data/invalid-templates.yaml`, each with the part of the message that
/// `kubectl apply` must print.
fn invalid_templates() -> Vec<(WorkflowTemplate, String)> {
    let text = include_str!("data/invalid-templates.yaml");
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let t: WorkflowTemplate = serde::Deserialize::deserialize(doc).unwrap();
            let expect = t.annotations()["test.sei.io/expect"].clone();
            (t, expect)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_templates_are_refused_at_admission_with_the_compilers_message() {
    let Some(ns) = setup("e2e-swt-admission").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(20), vec![]).await;
    let certs = TempDir::new("webhook-certs");
    let ca = webhook_certs(&certs.0);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cert_dir = certs.0.display().to_string();
    let op = Operator::start(
        ns.env(),
        ns.name(),
        &sim,
        &[
            ("SEI_WEBHOOK_ADDR", addr.as_str()),
            ("SEI_WEBHOOK_CERT_DIR", cert_dir.as_str()),
        ],
    );
    op.wait_log("Serving the WorkflowTemplate admission webhook", WAIT)
        .await;
    let _hook = Webhook::register(ns.client(), ns.name(), port, certs, &ca).await;
    let api = ns.api::<WorkflowTemplate>();

    // The webhook is live once a valid template passes and an invalid one is refused (registration is
    // asynchronous in the apiserver).
    let valid = template(
        "ok",
        &json!({"target": "SeiNode", "tasks": [{"name": "a", "type": "mark-ready"}]}),
    );
    api.create(&PostParams::default(), &valid).await.unwrap();
    eventually("the webhook to refuse an unknown task type", WAIT, || async {
        let probe = template(
            "probe",
            &json!({"target": "SeiNode", "tasks": [{"name": "a", "type": "nope"}]}),
        );
        match api.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("unknown task type `nope`") => Some(()),
            Ok(_) => {
                // Admitted before the registration took effect: remove it and try again.
                api.delete("probe", &DeleteParams::default()).await.ok();
                None
            }
            Err(_) => None,
        }
    })
    .await;

    let cases = invalid_templates();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (t, expected) in &cases {
        let name = t.name_any();
        match api.create(&PostParams::default(), t).await {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(kube::Error::Api(s)) if s.message.contains(expected.as_str()) => {}
            Err(e) => failures.push(format!("{name}: expected `{expected}`, got: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} not refused as expected:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // What a user sees: `kubectl apply` prints the compiler's message (task and field named).
    let file = std::env::temp_dir().join(format!("swt-{}.yaml", ns.name()));
    std::fs::write(
        &file,
        "apiVersion: sei.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: typo}\nspec:\n  target: SeiNode\n  \
         tasks:\n  - {name: restart, type: restart-sied}\n",
    )
    .unwrap();
    let kubectl = ns
        .env()
        .vars
        .get("SEI_CLUSTER_BIN")
        .map_or_else(|| "kubectl".to_owned(), |bin| format!("{bin}/kubectl"));
    let out = Command::new(kubectl)
        .args([
            "--kubeconfig",
            &ns.env().kubeconfig.display().to_string(),
            "-n",
            ns.name(),
            "apply",
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("kubectl apply said: {stderr}");
    assert!(!out.status.success());
    assert!(
        stderr.contains("task `restart`, field `type`: unknown task type `restart-sied`"),
        "{stderr}"
    );

    // An edit that breaks a valid template is refused too; the stored one stays valid.
    let mut broken = api.get("ok").await.unwrap();
    broken.spec.workflow.tasks[0].task_type = "nope".into();
    let err = api
        .replace("ok", &PostParams::default(), &broken)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown task type `nope`"), "{err}");
}

/// The `Valid` condition of template `name` once observed: (status, message).
async fn valid_condition(api: &Api<WorkflowTemplate>, name: &str) -> (String, String, Value) {
    eventually(&format!("{name} to have a Valid condition"), WAIT, || async {
        let t = api.get(name).await.ok()?;
        let status = t.status.as_ref()?;
        (status.observed_generation == t.metadata.generation).then_some(())?;
        let c = status.conditions.iter().find(|c| c.type_ == "Valid")?;
        Some((
            c.status.clone(),
            c.message.clone(),
            serde_json::to_value(status).unwrap(),
        ))
    })
    .await
}

fn run(name: &str, workflow: &str, target: &str, params: &Value) -> WorkflowRun {
    serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "WorkflowRun", "metadata": {"name": name},
        "spec": {"workflowRef": {"name": workflow}, "target": {"kind": "SeiNode", "name": target}, "params": params},
    }))
    .unwrap()
}

async fn run_phase(api: &Api<WorkflowRun>, name: &str, want: &'static str) -> Value {
    eventually(&format!("run {name} to be {want}"), WAIT, || async {
        let r = api.get(name).await.ok()?;
        let status = serde_json::to_value(r.status.as_ref()?).unwrap();
        (status["phase"] == want).then_some(status)
    })
    .await
}

/// A template that sets the log level through config-patch, then marks the node ready.
fn log_level_workflow(extra_task: bool) -> Value {
    let mut tasks = vec![
        json!({"name": "patch", "type": "config-patch",
               "params": {"files": {"config.toml": {"log_level": "${ params.logLevel }"}}}}),
        json!({"name": "ready", "type": "mark-ready", "dependsOn": ["patch"]}),
    ];
    if extra_task {
        tasks.push(json!({"name": "validate", "type": "config-validate", "dependsOn": ["ready"]}));
    }
    json!({"target": "SeiNode", "params": {"logLevel": "'info'"}, "tasks": tasks})
}

/// One namespace with the operator and a simulator whose tasks take `task` each.
struct Fixture {
    ns: sei_tests::TestNamespace,
    sim: Sim,
    _op: Operator,
    templates: Api<WorkflowTemplate>,
    runs: Api<WorkflowRun>,
    nodes: Api<SeiNode>,
}

impl Fixture {
    async fn start(prefix: &str, task: Duration) -> Option<Self> {
        let ns = setup(prefix).await?;
        let sim = Sim::start(task, vec![]).await;
        let op = Operator::start(ns.env(), ns.name(), &sim, &[]);
        Some(Self {
            templates: ns.api(),
            runs: ns.api(),
            nodes: ns.api(),
            ns,
            sim,
            _op: op,
        })
    }

    /// The config-validate tasks the simulator has seen.
    async fn validations(&self) -> usize {
        self.sim
            .tasks()
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["type"] == "config-validate")
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_reload_and_runs_execute_as_their_targets_plan() {
    let Some(f) = Fixture::start("e2e-swr", Duration::from_millis(400)).await else {
        return;
    };
    an_invalid_template_says_why_and_blocks_nothing(&f).await;
    let first = a_run_executes_as_the_nodes_plan(&f).await;
    the_cli_shows_runs_and_previews(&f, &first).await;
    an_edit_applies_to_the_next_plan_only(&f).await;
    bad_runs_fail_saying_why(&f).await;
}

async fn an_invalid_template_says_why_and_blocks_nothing(f: &Fixture) {
    let (_ns, _sim, templates, _runs, nodes) = (&f.ns, &f.sim, &f.templates, &f.runs, &f.nodes);
    // Without the webhook, an invalid template is stored, says why on `Valid`, and blocks nothing.
    templates
        .create(
            &PostParams::default(),
            &template(
                "broken",
                &json!({"target": "SeiNode", "tasks": [
            {"name": "a", "type": "mark-ready", "dependsOn": ["zz"]}]}),
            ),
        )
        .await
        .unwrap();
    let (status, message, _) = valid_condition(templates, "broken").await;
    assert_eq!(status, "False");
    assert!(
        message.contains("task `a`, field `dependsOn`: unknown dependency `zz`"),
        "{message}"
    );

    templates
        .create(
            &PostParams::default(),
            &template("set-log-level", &log_level_workflow(false)),
        )
        .await
        .unwrap();
    let (status, _, v1) = valid_condition(templates, "set-log-level").await;
    assert_eq!(status, "True");
    assert_eq!(v1["taskCount"], 2);

    nodes
        .create(
            &PostParams::default(),
            &seinode("rpc", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    sei_tests::wait_for(nodes, "rpc", in_phase("Running"), WAIT)
        .await
        .unwrap();
}

async fn a_run_executes_as_the_nodes_plan(f: &Fixture) -> Value {
    let (_ns, sim, _templates, runs, nodes) = (&f.ns, &f.sim, &f.templates, &f.runs, &f.nodes);
    // A run executes as the node's plan (its journal in the node's status), with the run's params.
    runs.create(
        &PostParams::default(),
        &run("first", "set-log-level", "rpc", &json!({"logLevel": "debug"})),
    )
    .await
    .unwrap();
    let first = run_phase(runs, "first", "Succeeded").await;
    let node = nodes.get("rpc").await.unwrap();
    let history = &node.status.as_ref().unwrap().plan_history;
    let summary = history
        .iter()
        .find(|s| Some(s.id.to_string()) == first["planId"].as_str().map(str::to_owned));
    assert!(
        summary.is_some_and(|s| s.workflow == "set-log-level"),
        "{history:?}"
    );
    assert_eq!(first["traceId"].as_str().map(str::len), Some(32), "{first}");
    let patches: Vec<Value> = sim
        .tasks()
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "config-patch")
        .cloned()
        .collect();
    assert!(
        patches
            .iter()
            .any(|t| t["params"]["files"]["config.toml"]["log_level"] == "debug"),
        "{patches:?}"
    );

    first
}

async fn the_cli_shows_runs_and_previews(f: &Fixture, first: &Value) {
    let (ns, sim, _templates, _runs, _nodes) = (&f.ns, &f.sim, &f.templates, &f.runs, &f.nodes);
    // `plan show` reads a run's plan (the target's); `workflow preview` prints what would run, running nothing.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sei-operator"))
            .args(args)
            .args([
                "-n",
                ns.name(),
                "--kubeconfig",
                &ns.env().kubeconfig.display().to_string(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let shown = cli(&["plan", "show", "swr/first"]);
    assert!(
        shown.contains("set-log-level") && shown.contains(first["planId"].as_str().unwrap()),
        "{shown}"
    );
    let submitted = sim.tasks().await.as_array().unwrap().len();
    let preview = cli(&[
        "workflow",
        "preview",
        "set-log-level",
        "--target",
        "snode/rpc",
        "--param",
        "logLevel=warn",
    ]);
    assert!(preview.contains("logLevel = \"warn\" (given)"), "{preview}");
    assert!(preview.contains("\"log_level\":\"warn\""), "{preview}");
    assert_eq!(
        sim.tasks().await.as_array().unwrap().len(),
        submitted,
        "a preview starts nothing"
    );
}

async fn an_edit_applies_to_the_next_plan_only(f: &Fixture) {
    let (_ns, _sim, templates, runs, nodes) = (&f.ns, &f.sim, &f.templates, &f.runs, &f.nodes);
    let v1 = valid_condition(templates, "set-log-level").await.2;
    // Hot reload: a run in flight keeps the definition it was compiled from; the next one uses the edit.
    let before_second = f.validations().await;
    runs.create(
        &PostParams::default(),
        &run("second", "set-log-level", "rpc", &json!({})),
    )
    .await
    .unwrap();
    run_phase(runs, "second", "Running").await;
    let mut edited = templates.get("set-log-level").await.unwrap();
    edited.spec = template("x", &log_level_workflow(true)).spec;
    templates
        .replace("set-log-level", &PostParams::default(), &edited)
        .await
        .unwrap();
    let (_, _, v2) = eventually("the edit to be checked", WAIT, || async {
        let c = valid_condition(templates, "set-log-level").await;
        (c.2["taskCount"] == 3).then_some(c)
    })
    .await;
    assert_ne!(v1["digest"], v2["digest"]);
    let second = run_phase(runs, "second", "Succeeded").await;
    assert_eq!(
        f.validations().await,
        before_second,
        "the run compiled before the edit runs as compiled"
    );
    runs.create(
        &PostParams::default(),
        &run("third", "set-log-level", "rpc", &json!({})),
    )
    .await
    .unwrap();
    let third = run_phase(runs, "third", "Succeeded").await;
    let history = nodes.get("rpc").await.unwrap().status.unwrap().plan_history;
    let tasks_of = |run: &Value| {
        let id = run["planId"].as_str().unwrap().to_owned();
        history
            .iter()
            .find(|s| s.id.to_string() == id)
            .map(|s| s.workflow.clone())
    };
    assert!(tasks_of(&second).is_some() && tasks_of(&third).is_some());
    assert_eq!(
        f.validations().await,
        before_second + 1,
        "the run created after the edit validates the config"
    );
}

async fn bad_runs_fail_saying_why(f: &Fixture) {
    let (_ns, _sim, _templates, runs, _nodes) = (&f.ns, &f.sim, &f.templates, &f.runs, &f.nodes);
    // A run of an unknown param fails with the field named; a run against a missing node fails too.
    runs.create(
        &PostParams::default(),
        &run("typo", "set-log-level", "rpc", &json!({"logLvl": "x"})),
    )
    .await
    .unwrap();
    let typo = run_phase(runs, "typo", "Failed").await;
    assert!(
        typo["message"]
            .as_str()
            .unwrap()
            .contains("params.logLvl: is not a param of this workflow"),
        "{typo}"
    );
    runs.create(
        &PostParams::default(),
        &run("ghost", "set-log-level", "nobody", &json!({})),
    )
    .await
    .unwrap();
    run_phase(runs, "ghost", "Failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_run_cancels_its_plan_and_finished_runs_expire() {
    let Some(ns) = setup("e2e-swr-cancel").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(100), vec![]).await;
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let (templates, runs, nodes) = (
        ns.api::<WorkflowTemplate>(),
        ns.api::<WorkflowRun>(),
        ns.api::<SeiNode>(),
    );
    common::create_full_node(&nodes, "rpc", "Running", WAIT).await;
    // A long-running task: config-patch blocked by a slow sidecar (the sim's delay fault).
    templates
        .create(
            &PostParams::default(),
            &template(
                "slow",
                &json!({"target": "SeiNode", "tasks": [
            {"name": "wait", "type": "config-validate"},
            {"name": "after", "type": "mark-ready", "dependsOn": ["wait"]}]}),
            ),
        )
        .await
        .unwrap();
    valid_condition(&templates, "slow").await;
    sim.fault(json!({"kind": "duration", "task": "config-validate", "node": format!("{}/rpc", ns.name()), "delay": "8s"}))
        .await;
    runs.create(&PostParams::default(), &run("doomed", "slow", "rpc", &json!({})))
        .await
        .unwrap();
    let running = run_phase(&runs, "doomed", "Running").await;
    let plan_id = running["planId"].as_str().unwrap().to_owned();
    runs.delete("doomed", &DeleteParams::default()).await.unwrap();
    common::wait_gone(&runs, "doomed", WAIT).await;
    let summary = eventually("the node's plan to end Cancelled", WAIT, || async {
        let node = nodes.get("rpc").await.ok()?;
        node.status?
            .plan_history
            .into_iter()
            .find(|s| s.id.to_string() == plan_id)
    })
    .await;
    assert_eq!(serde_json::to_value(summary.phase).unwrap(), "Cancelled");

    // ttlSecondsAfterFinished: a finished run is deleted after it.
    let mut expiring = run("expiring", "mark-ready", "rpc", &json!({}));
    expiring.spec.ttl_seconds_after_finished = Some(1);
    runs.create(&PostParams::default(), &expiring).await.unwrap();
    common::wait_gone(&runs, "expiring", WAIT).await;
}

/// The workflow of the node's active plan, else of its newest finished one.
async fn last_workflow(nodes: &Api<SeiNode>, name: &str) -> Option<String> {
    let status = nodes.get(name).await.ok()?.status?;
    status
        .plan
        .map(|p| p.workflow)
        .or_else(|| status.plan_history.last().map(|s| s.workflow.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_disables_or_overrides_a_builtin_and_selector_runs_fan_out() {
    let Some(f) = Fixture::start("e2e-swt-override", Duration::from_millis(50)).await else {
        return;
    };
    a_builtin_is_disabled_then_overridden(&f).await;
    a_selector_run_fans_out_with_max_parallel(&f).await;
}

async fn a_builtin_is_disabled_then_overridden(f: &Fixture) {
    let (templates, nodes) = (&f.templates, &f.nodes);
    // Disabled: a new node gets no node-init plan in this namespace.
    templates
        .create(
            &PostParams::default(),
            &template(
                "no-init",
                &json!({
            "target": "SeiNode", "overrides": "node-init", "disabled": true}),
            ),
        )
        .await
        .unwrap();
    let (status, message, _) = valid_condition(templates, "no-init").await;
    assert_eq!(status, "True", "{message}");
    nodes
        .create(
            &PostParams::default(),
            &seinode("held", &full_node_spec("seid:v1")),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        last_workflow(nodes, "held").await,
        None,
        "node-init is disabled here"
    );

    // Overridden: the namespace's own init runs instead (hot reload wakes the idle node at once).
    // (One edit: deleting the disabling template first would bring the built-in back in between.)
    let mut init = templates.get("no-init").await.unwrap();
    init.spec = template(
        "x",
        &json!({
            "target": "SeiNode", "overrides": "node-init",
            "trigger": "!has(self.status.phase) || self.status.phase in ['', 'Pending', 'Initializing']",
            "tasks": [{"name": "ready", "type": "mark-ready"}],
            "onSuccess": {"phase": "Running"}}),
    )
    .spec;
    templates
        .replace("no-init", &PostParams::default(), &init)
        .await
        .unwrap();
    sei_tests::wait_for(nodes, "held", in_phase("Running"), WAIT)
        .await
        .unwrap();
    assert_eq!(last_workflow(nodes, "held").await.as_deref(), Some("no-init"));
}

async fn a_selector_run_fans_out_with_max_parallel(f: &Fixture) {
    let (templates, runs, nodes) = (&f.templates, &f.runs, &f.nodes);
    // A selector run: one plan per matching node, at most maxParallel (1) at once, in name order.
    for name in ["batch-a", "batch-b"] {
        let mut node = seinode(name, &full_node_spec("seid:v1"));
        node.metadata.labels = Some([("tier".to_owned(), "batch".to_owned())].into());
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    for name in ["batch-a", "batch-b"] {
        sei_tests::wait_for(nodes, name, in_phase("Running"), WAIT)
            .await
            .unwrap();
    }
    templates
        .create(
            &PostParams::default(),
            &template("set-log-level", &log_level_workflow(false)),
        )
        .await
        .unwrap();
    valid_condition(templates, "set-log-level").await;
    let fan_out: WorkflowRun = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "WorkflowRun", "metadata": {"name": "fan-out"},
        "spec": {"workflowRef": {"name": "set-log-level"}, "maxParallel": 1,
                 "target": {"kind": "SeiNode", "selector": {"matchLabels": {"tier": "batch"}}},
                 "params": {"logLevel": "error"}},
    }))
    .unwrap();
    runs.create(&PostParams::default(), &fan_out).await.unwrap();
    let done = run_phase(runs, "fan-out", "Succeeded").await;
    let targets = done["targets"].as_array().unwrap();
    assert_eq!(
        targets
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["batch-a", "batch-b"]
    );
    let span = |node: &str, id: &str| {
        let nodes = nodes.clone();
        let (node, id) = (node.to_owned(), id.to_owned());
        async move {
            let s = nodes.get(&node).await.unwrap().status.unwrap();
            let summary = s
                .plan_history
                .into_iter()
                .find(|p| p.id.to_string() == id)
                .unwrap();
            (summary.started_at, summary.finished_at.unwrap())
        }
    };
    let (_, a_end) = span("batch-a", targets[0]["planId"].as_str().unwrap()).await;
    let (b_start, _) = span("batch-b", targets[1]["planId"].as_str().unwrap()).await;
    assert!(
        b_start >= a_end,
        "maxParallel 1: batch-b started at {b_start:?}, before batch-a ended at {a_end:?}"
    );
}

#[tokio::test]
async fn the_webhook_component_builds_and_wires_the_operator() {
    let Some((env, _)) = sei_tests::cluster().await else {
        return;
    };
    let kubectl = env
        .vars
        .get("SEI_CLUSTER_BIN")
        .map_or_else(|| "kubectl".to_owned(), |bin| format!("{bin}/kubectl"));
    // An overlay as a user writes it: the base plus the component.
    let root = sei_tests::workspace_root();
    let overlay = root
        .join("target")
        .join(format!("webhook-overlay-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "resources: [../../deploy]\ncomponents: [../../deploy/webhook]\n",
    )
    .unwrap();
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&overlay).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let find = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();
    let hook = &find("ValidatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(
        hook["clientConfig"]["service"]["path"],
        sei_operator::webhook::TEMPLATE_PATH
    );
    assert_eq!(hook["rules"][0]["resources"][0], "workflowtemplates");
    let container = &find("Deployment")["spec"]["template"]["spec"]["containers"][0];
    let env_names: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        env_names.contains(&"SEI_WEBHOOK_ADDR") && env_names.contains(&"SEI_WEBHOOK_CERT_DIR"),
        "{env_names:?}"
    );
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "sei-operator-webhook")
        .unwrap();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_a_crash_between_its_two_writes() {
    let Some(ns) = setup("e2e-swr-crash").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let (templates, runs, nodes) = (
        ns.api::<WorkflowTemplate>(),
        ns.api::<WorkflowRun>(),
        ns.api::<SeiNode>(),
    );
    let calm = Operator::start(ns.env(), ns.name(), &sim, &[("SEI_LEADER_ELECT", "false")]);
    common::create_full_node(&nodes, "rpc", "Running", WAIT).await;
    templates
        .create(
            &PostParams::default(),
            &template("set-log-level", &log_level_workflow(false)),
        )
        .await
        .unwrap();
    valid_condition(&templates, "set-log-level").await;
    drop(calm);

    // The operator dies right after the plan is written into the node, before the run's status says Running.
    let mut crashing = Operator::start(
        ns.env(),
        ns.name(),
        &sim,
        &[
            ("SEI_LEADER_ELECT", "false"),
            ("SEI_FAILPOINTS", "runs::after-target-write=1*return"),
        ],
    );
    runs.create(
        &PostParams::default(),
        &run("once", "set-log-level", "rpc", &json!({})),
    )
    .await
    .unwrap();
    let code = eventually("the operator to crash at the failpoint", WAIT, || {
        let status = crashing.exit_status();
        async move { status }
    })
    .await;
    assert_eq!(code.code(), Some(sei_operator::failpoints::CRASH_EXIT_CODE));

    let _after = Operator::start(ns.env(), ns.name(), &sim, &[("SEI_LEADER_ELECT", "false")]);
    let done = run_phase(&runs, "once", "Succeeded").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let history = nodes.get("rpc").await.unwrap().status.unwrap().plan_history;
    let plans: Vec<String> = history
        .iter()
        .filter(|p| p.workflow == "set-log-level")
        .map(|p| p.id.to_string())
        .collect();
    assert_eq!(
        plans,
        [done["planId"].as_str().unwrap()],
        "exactly one plan, the one the run recorded"
    );
}
