#![allow(clippy::needless_pass_by_value)] // test helpers take owned JSON for readability

use serde_json::json;

use super::*;

fn registry() -> sei_engine::Registry {
    let mut r = sei_engine::Registry::new();
    for w in Catalog::builtin().unwrap().iter() {
        for t in w
            .definition()
            .spec
            .tasks
            .iter()
            .chain(&w.definition().spec.finally)
        {
            r = r.with_any_params(t.task_type.clone());
        }
    }
    r
}

fn node(status: Value) -> Value {
    json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode",
        "metadata": {"name": "n", "namespace": "ns"},
        "spec": {"chainId": "atlantic-2", "image": "seid:v2", "fullNode": {}},
        "status": status,
    })
}

fn facts(snapshot: Option<Value>) -> Value {
    let mut f = BTreeMap::from([
        (node_facts::MODE, json!("fullNode")),
        (node_facts::CONFIG_MODE, json!("full")),
        (node_facts::SIDECAR_IMAGE, json!("seictl:v1")),
    ]);
    if let Some(s) = snapshot {
        f.insert(node_facts::SNAPSHOT, s);
    }
    node_binding(f)
}

fn triggered(status: Value) -> Vec<String> {
    let catalog = Catalog::builtin().unwrap();
    let b = Bindings::new(&node(status), &facts(None)).unwrap();
    catalog
        .all_triggered("SeiNode", &b)
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn builtin_workflows_load_and_parse() {
    let catalog = Catalog::builtin().unwrap();
    let names: Vec<_> = catalog.iter().map(Workflow::name).collect();
    assert_eq!(
        names,
        [
            "node-init",
            "node-update",
            "mark-ready",
            "node-peers",
            "node-reconfigure",
            "ceremony-member",
            "genesis-ceremony",
            "fleet-rollout"
        ]
    );
}

#[test]
fn a_new_node_triggers_only_node_init() {
    assert_eq!(triggered(json!({})), ["node-init"]);
    assert_eq!(triggered(json!({"phase": "Initializing"})), ["node-init"]);
}

#[test]
fn a_running_node_with_a_new_image_triggers_node_update() {
    assert_eq!(
        triggered(json!({"phase": "Running", "currentImage": "seid:v1"})),
        ["node-update"]
    );
    assert!(triggered(json!({"phase": "Running", "currentImage": "seid:v2"})).is_empty());
}

#[test]
fn sidecar_image_drift_triggers_node_update() {
    let status = json!({"phase": "Running", "currentImage": "seid:v2", "currentSidecarImage": "seictl:v0"});
    assert_eq!(triggered(status), ["node-update"]);
}

#[test]
fn a_sidecar_that_lost_readiness_triggers_mark_ready() {
    let status = json!({"phase": "Running", "currentImage": "seid:v2",
        "conditions": [{"type": "SidecarReady", "status": "False", "reason": "NotReady"}]});
    assert_eq!(triggered(status), ["mark-ready"]);
}

#[test]
fn a_failed_node_triggers_nothing() {
    assert!(triggered(json!({"phase": "Failed"})).is_empty());
}

#[test]
fn node_init_skips_snapshot_tasks_without_a_snapshot_source() {
    let catalog = Catalog::builtin().unwrap();
    let w = catalog.get("node-init").unwrap();
    let b = Bindings::new(&node(json!({})), &facts(None)).unwrap();
    let plan = w
        .instantiate(
            &b,
            Uuid::from_u128(1),
            Timestamp::from_unix_millis(0),
            None,
            &registry(),
        )
        .unwrap();
    let skipped: Vec<_> = plan
        .tasks
        .iter()
        .filter(|t| t.runs.iter().all(|r| r.skip))
        .map(|t| t.name.as_str())
        .collect();
    assert!(skipped.contains(&"snapshot-restore"), "{skipped:?}");
    assert!(skipped.contains(&"configure-state-sync"), "{skipped:?}");
    assert!(skipped.contains(&"validate-signing-key"), "{skipped:?}");
    let apply = plan.tasks.iter().find(|t| t.name == "config-apply").unwrap();
    assert_eq!(apply.params["mode"], "full");
}

#[test]
fn node_init_restores_a_snapshot_when_the_node_has_one() {
    let catalog = Catalog::builtin().unwrap();
    let w = catalog.get("node-init").unwrap();
    let snapshot = json!({"s3": {"targetHeight": 1234}});
    let b = Bindings::new(&node(json!({})), &facts(Some(snapshot))).unwrap();
    let plan = w
        .instantiate(
            &b,
            Uuid::from_u128(1),
            Timestamp::from_unix_millis(0),
            None,
            &registry(),
        )
        .unwrap();
    let restore = plan.tasks.iter().find(|t| t.name == "snapshot-restore").unwrap();
    assert!(restore.runs.iter().all(|r| !r.skip));
    assert_eq!(restore.params["targetHeight"], 1234);
    let sync = plan
        .tasks
        .iter()
        .find(|t| t.name == "configure-state-sync")
        .unwrap();
    assert_eq!(sync.params["useLocalSnapshot"], true);
}

#[test]
fn node_update_patches_peers_joined_by_commas() {
    let catalog = Catalog::builtin().unwrap();
    let w = catalog.get("node-update").unwrap();
    let status =
        json!({"phase": "Running", "currentImage": "seid:v1", "resolvedPeers": ["a@h1:26656", "b@h2:26656"]});
    let b = Bindings::new(&node(status), &facts(None)).unwrap();
    let plan = w
        .instantiate(
            &b,
            Uuid::from_u128(2),
            Timestamp::from_unix_millis(0),
            None,
            &registry(),
        )
        .unwrap();
    let patch = plan.tasks.iter().find(|t| t.name == "config-patch").unwrap();
    assert_eq!(
        patch.params["files"]["config.toml"]["p2p"]["persistent-peers"],
        "a@h1:26656,b@h2:26656"
    );
}

#[test]
fn cel_syntax_errors_name_the_file_workflow_task_and_field() {
    let yaml = "name: broken\ntarget: SeiNode\ntasks:\n  - {name: a, type: mark-ready, when: 'self.(('}\n";
    let err = Workflow::from_yaml("broken.yaml", yaml).unwrap_err().to_string();
    assert!(
        err.contains("broken.yaml") && err.contains("`broken`") && err.contains("tasks[a].when"),
        "{err}"
    );
}

#[test]
fn a_trigger_that_is_not_a_bool_is_an_error_naming_the_field() {
    let yaml =
        "name: odd\ntarget: SeiNode\ntrigger: self.spec.image\ntasks:\n  - {name: a, type: mark-ready}\n";
    let catalog = Catalog::from_sources([("odd.yaml", yaml)]).unwrap();
    let b = Bindings::new(&node(json!({})), &facts(None)).unwrap();
    let err = catalog.triggered("SeiNode", &b).unwrap_err().to_string();
    assert!(
        err.contains("odd.yaml") && err.contains("trigger") && err.contains("bool"),
        "{err}"
    );
}

#[test]
fn duplicate_workflow_names_are_refused() {
    let yaml = "name: dup\ntarget: SeiNode\ntasks:\n  - {name: a, type: mark-ready}\n";
    let err = Catalog::from_sources([("a.yaml", yaml), ("b.yaml", yaml)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("b.yaml") && err.contains("already defined"), "{err}");
}

fn deployment(status: Value) -> Value {
    json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "SeiNodeDeployment",
        "metadata": {"name": "g", "namespace": "ns"},
        "spec": {
            "replicas": 2,
            "genesis": {"chainId": "c-1"},
            "template": {"spec": {"chainId": "c-1", "image": "seid:v1", "validator": {}}},
        },
        "status": status,
    })
}

fn fleet_facts(nodes: &[&str], batches: &[&str]) -> Value {
    node_binding(BTreeMap::from([
        ("nodes", json!(nodes)),
        ("rolloutBatches", json!(batches)),
        (
            "genesis",
            json!({"chainId": "c-1", "stakingAmount": "1usei", "accountBalance": "2usei"}),
        ),
    ]))
}

fn fleet_triggered(status: Value, nodes: &[&str], batches: &[&str]) -> Vec<String> {
    let catalog = Catalog::builtin().unwrap();
    let b = Bindings::new(&deployment(status), &fleet_facts(nodes, batches)).unwrap();
    catalog
        .all_triggered("SeiNodeDeployment", &b)
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_ceremony_waits_for_every_child_and_runs_until_it_completed_or_failed() {
    assert!(fleet_triggered(json!({}), &["g-0"], &[]).is_empty());
    assert_eq!(
        fleet_triggered(json!({}), &["g-0", "g-1"], &[]),
        ["genesis-ceremony"]
    );
    let done = |reason: &str, status: &str| {
        json!({"conditions": [{"type": "GenesisCeremonyComplete", "status": status, "reason": reason,
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    };
    assert!(fleet_triggered(done("CeremonyFailed", "False"), &["g-0", "g-1"], &[]).is_empty());
    assert_eq!(
        fleet_triggered(done("Complete", "True"), &["g-0", "g-1"], &["g-0"]),
        ["fleet-rollout"]
    );
    assert!(fleet_triggered(json!({}), &["g-0", "g-1"], &["g-0"]) == ["genesis-ceremony"]);
}

#[test]
fn the_ceremony_compiles_one_branch_per_validator_with_the_assemblers_hash_checked_by_each() {
    let catalog = Catalog::builtin().unwrap();
    let b = Bindings::new(&deployment(json!({})), &fleet_facts(&["g-0", "g-1"], &[])).unwrap();
    let plan = catalog
        .get("genesis-ceremony")
        .unwrap()
        .instantiate(
            &b,
            uuid::Uuid::nil(),
            sei_engine::Timestamp::from_unix_millis(0),
            None,
            &registry(),
        )
        .unwrap();
    let run = plan.run("configure-genesis[g-1]").unwrap();
    assert_eq!(run.task.run_target(run.index).as_deref(), Some("g-1"));
    assert_eq!(
        run.task.params["expectedGenesisHash"],
        "${ tasks.assemble.outputs.genesisHash }"
    );
    let assemble = plan.run("assemble").unwrap();
    assert_eq!(assemble.task.target.as_deref(), Some("g-0"));
    assert_eq!(assemble.task.params["nodes"], json!(["g-0", "g-1"]));
}

#[test]
fn a_ceremony_child_runs_ceremony_member_instead_of_node_init() {
    let catalog = Catalog::builtin().unwrap();
    let mut child = node(json!({}));
    child["spec"] = json!({"chainId": "c-1", "image": "seid:v1",
        "validator": {"genesisCeremony": {"chainId": "c-1", "stakingAmount": "1usei", "accountBalance": "1usei", "index": 0}}});
    let b = Bindings::new(&child, &facts(None)).unwrap();
    assert_eq!(catalog.all_triggered("SeiNode", &b).unwrap(), ["ceremony-member"]);
}
