//! Executing tasks: each submission (or re-execution of a failed id) spawns one execution that stays `running`
//! for the task duration, consults the `fail` faults, then runs the task's handler and records the outcome.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use uuid::Uuid;

use super::faults::{Action, NodeRef};
use super::genesis::{self, Assembly};
use super::ops;
use super::state::{Identity, Node, Sim, Status};

/// How often a waiting `assemble-and-upload-genesis` looks at the bucket again.
const ASSEMBLE_POLL: Duration = Duration::from_millis(100);

type Apply = Box<dyn FnOnce(&mut Node) + Send>;

pub(super) enum Outcome {
    Completed {
        result: Option<Value>,
        apply: Option<Apply>,
    },
    Failed {
        error: String,
        result: Option<Value>,
    },
    /// The task was cancelled, or the sidecar restarted, while it ran: nothing to record.
    Abandoned,
}

pub(super) fn completed(result: Option<Value>) -> Outcome {
    Outcome::Completed { result, apply: None }
}

pub(super) fn completed_with(
    result: Option<Value>,
    apply: impl FnOnce(&mut Node) + Send + 'static,
) -> Outcome {
    Outcome::Completed {
        result,
        apply: Some(Box::new(apply)),
    }
}

pub(super) fn failed(error: impl Into<String>) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        result: None,
    }
}

/// Starts execution `run` of task `id` on `node` in the background.
pub(super) fn spawn(sim: Arc<Sim>, node: NodeRef, id: Uuid, run: u32, epoch: u64) {
    tokio::spawn(async move { execute(&sim, &node, id, run, epoch).await });
}

async fn execute(sim: &Sim, node: &NodeRef, id: Uuid, run: u32, epoch: u64) {
    let Some((task_type, params)) = sim.with(|s| {
        s.current(node, id, run, epoch)
            .map(|t| (t.task_type.clone(), t.params.clone()))
    }) else {
        return;
    };
    let delay = sim
        .with(|s| s.task_duration(node, &task_type))
        .unwrap_or(sim.config.task_duration);
    tokio::time::sleep(delay).await;
    // The fault is consumed only by an execution that is still wanted.
    let fault = sim.with(|s| {
        s.current(node, id, run, epoch)
            .is_some()
            .then(|| s.take_failure(node, &task_type, id, run))
    });
    let outcome = match fault {
        None => Outcome::Abandoned,
        Some(Some(Action::Fail { error, result })) => injected_failure(&task_type, run, error, result),
        Some(_) => handle(sim, node, id, run, epoch, &task_type, &params).await,
    };
    sim.with(|s| {
        if matches!(outcome, Outcome::Abandoned) {
            return;
        }
        if s.current(node, id, run, epoch).is_none() {
            return;
        }
        *s.node(node).finished.entry(id).or_default() += 1;
        let Some(task) = s.current(node, id, run, epoch) else { return };
        task.completed_at = Some(SystemTime::now());
        let apply = match outcome {
            Outcome::Abandoned => None,
            Outcome::Completed { result, apply } => {
                task.status = Status::Completed;
                task.result = result;
                tracing::info!(node = %node, task.id = %id, task.kind = %task_type, run, "Task completed");
                apply
            }
            Outcome::Failed { error, result } => {
                task.status = Status::Failed;
                tracing::info!(node = %node, task.id = %id, task.kind = %task_type, run, error, "Task failed");
                task.error = Some(error);
                task.result = result;
                None
            }
        };
        if let Some(apply) = apply {
            apply(s.node(node));
        }
    });
}

fn injected_failure(task_type: &str, run: u32, error: Option<String>, result: Option<Value>) -> Outcome {
    if task_type == "config-validate" {
        let result = result.unwrap_or_else(|| {
            json!({"diagnostics": [{
                "severity": "error",
                "file": "config.toml",
                "field": "p2p.persistent_peers",
                "message": "injected fault: invalid peer address",
            }]})
        });
        let error = error.unwrap_or_else(|| "config validation failed with 1 error".to_owned());
        return Outcome::Failed {
            error,
            result: Some(result),
        };
    }
    let error = error.unwrap_or_else(|| format!("injected failure of {task_type} (run {run})"));
    Outcome::Failed { error, result }
}

fn str_param(params: &Value, key: &str) -> Option<String> {
    match &params[key] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

struct Snapshot {
    identity: Option<Identity>,
    gentx: Option<(String, Value)>,
}

async fn handle(
    sim: &Sim,
    node: &NodeRef,
    id: Uuid,
    run: u32,
    epoch: u64,
    task_type: &str,
    params: &Value,
) -> Outcome {
    let snap = sim.with(|s| {
        let n = s.node(node);
        Snapshot {
            identity: n.identity.clone(),
            gentx: n.gentx.clone(),
        }
    });
    let chain_of_identity = snap.identity.as_ref().and_then(|i| i.chain_id.clone());
    let chain = str_param(params, "chainId").or(chain_of_identity);
    match task_type {
        "mark-ready" => completed_with(None, |n| n.ready = true),
        "mark-not-ready" => completed_with(None, |n| {
            n.ready = false;
            n.tasks.retain(|_, t| t.task_type != "mark-ready");
        }),
        "generate-identity" => generate_identity(node, params),
        "generate-gentx" => generate_gentx(snap.identity, chain, params),
        "upload-genesis-artifacts" => upload_artifacts(sim, node, &snap, params),
        "assemble-and-upload-genesis" => assemble(sim, node, id, run, epoch, chain, params).await,
        // A ceremony member has an identity generated for a new chain; the key `config-apply` creates (as
        // `seid init` does) has no chain and does not make the node one.
        "configure-genesis" => {
            let ceremony = snap.identity.as_ref().is_some_and(|i| i.chain_id.is_some());
            configure_genesis(sim, ceremony, chain, params)
        }
        "set-genesis-peers" => set_genesis_peers(sim, node, snap.identity.as_ref(), chain),
        "config-patch" => config_patch(sim, node, params),
        "config-apply" => config_apply(node, params),
        "config-validate" => completed(Some(json!({"valid": true, "diagnostics": []}))),
        "snapshot-restore" => completed(Some(
            json!({"height": params["targetHeight"].as_u64().unwrap_or(0)}),
        )),
        "configure-state-sync" => completed(Some(
            json!({"rpcServers": params.get("rpcServers").cloned().unwrap_or(json!([]))}),
        )),
        "stop-seid" => ops::stop_seid(sim, node),
        "restart-seid" => ops::restart_seid(sim, node),
        "reset-data" => ops::reset_data(sim, node),
        "await-condition" => ops::await_condition(sim, node, (id, run, epoch), params).await,
        "gov-vote" | "gov-software-upgrade" | "gov-param-change" => {
            ops::gov(sim, node, (id, run, epoch), task_type, params)
        }
        "snapshot-upload-once" => ops::snapshot_upload_once(sim, node, chain),
        _ => completed(None),
    }
}

/// `config-apply`: records the intent (mode, overrides) as the node's config, and creates the node key when
/// there is none (as `seid init` does for the real sidecar), so `node-id` answers from then on.
fn config_apply(node: &NodeRef, params: &Value) -> Outcome {
    let applied =
        json!({"mode": params["mode"], "overrides": params.get("overrides").cloned().unwrap_or(json!({}))});
    let result = json!({"mode": params["mode"], "incremental": params["incremental"]});
    let key = genesis::node_key(node);
    let moniker = node.name.clone();
    completed_with(Some(result), move |n| {
        n.identity.get_or_insert(Identity {
            key,
            chain_id: None,
            moniker,
        });
        n.config = Some(applied);
        n.config_patches.clear();
    })
}

/// `config-patch`: deep-merges the files' trees into the node's patched config; `restartRequired` says
/// whether anything changed (seid reads its config at start).
fn config_patch(sim: &Sim, node: &NodeRef, params: &Value) -> Outcome {
    let Some(files) = params["files"].as_object().filter(|f| !f.is_empty()) else {
        return failed("config-patch: params.files must be a non-empty object of file name to TOML tree");
    };
    let before = sim.with(|s| s.node(node).patched.clone());
    let mut after = before.clone();
    merge(&mut after, &Value::Object(files.clone()));
    let changed = after != before;
    let result = json!({"patched": files.keys().collect::<Vec<_>>(), "restartRequired": changed});
    let patch = params["files"].clone();
    completed_with(Some(result), move |n| {
        n.patched = after;
        n.config_patches.push(patch);
    })
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn generate_identity(node: &NodeRef, params: &Value) -> Outcome {
    let key = genesis::node_key(node);
    let node_id = genesis::node_id(&key.verifying_key());
    let chain_id = str_param(params, "chainId");
    let moniker = str_param(params, "moniker").unwrap_or_else(|| node.name.clone());
    completed_with(Some(json!({"nodeId": node_id})), move |n| {
        let identity = n.identity.get_or_insert(Identity {
            key,
            chain_id: None,
            moniker: moniker.clone(),
        });
        identity.moniker = moniker;
        if chain_id.is_some() {
            identity.chain_id = chain_id;
        }
    })
}

fn generate_gentx(identity: Option<Identity>, chain: Option<String>, params: &Value) -> Outcome {
    let Some(identity) = identity else {
        return failed("no node key: generate-identity has not run on this node");
    };
    let Some(chain) = chain else {
        return failed("chainId is unknown: pass params.chainId or run generate-identity with one");
    };
    let staking = str_param(params, "stakingAmount").unwrap_or_else(|| "1000000usei".to_owned());
    let balance = str_param(params, "accountBalance").unwrap_or_else(|| "10000000usei".to_owned());
    let tx = genesis::gentx(&identity.key, &chain, &identity.moniker, &staking, &balance);
    let node_id = genesis::node_id(&identity.key.verifying_key());
    completed_with(Some(json!({"nodeId": node_id, "chainId": chain})), move |n| {
        n.gentx = Some((chain, tx));
    })
}

fn upload_artifacts(sim: &Sim, node: &NodeRef, snap: &Snapshot, params: &Value) -> Outcome {
    let (Some(identity), Some((gentx_chain, gentx))) = (&snap.identity, &snap.gentx) else {
        return failed("no gentx: generate-identity and generate-gentx have not run on this node");
    };
    let chain = str_param(params, "chainId").unwrap_or_else(|| gentx_chain.clone());
    let name = str_param(params, "nodeName").unwrap_or_else(|| node.name.clone());
    let gentx_key = format!("{chain}/{name}/gentx.json");
    let identity_key = format!("{chain}/{name}/identity.json");
    let upload = || -> anyhow::Result<()> {
        // identity.json last: the assembler waits for both, and a reader of identity.json finds the gentx.
        sim.bucket.put_json(&gentx_key, gentx)?;
        sim.bucket
            .put_json(&identity_key, &genesis::identity(&identity.key))?;
        Ok(())
    };
    match upload() {
        Ok(()) => completed(Some(json!({"gentx": gentx_key, "identity": identity_key}))),
        Err(e) => failed(format!("uploading genesis artifacts: {e:#}")),
    }
}

async fn assemble(
    sim: &Sim,
    node: &NodeRef,
    id: Uuid,
    run: u32,
    epoch: u64,
    chain: Option<String>,
    params: &Value,
) -> Outcome {
    let Some(chain_id) = chain else {
        return failed("chainId is unknown: pass params.chainId");
    };
    let nodes: Vec<String> = params["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().or_else(|| n["name"].as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if nodes.is_empty() {
        return failed("params.nodes must list the validators (names or {\"name\": …})");
    }
    let assembly = Assembly {
        chain_id,
        namespace: str_param(params, "namespace").unwrap_or_else(|| node.namespace.clone()),
        nodes,
        account_balance: str_param(params, "accountBalance"),
        accounts: params.get("accounts").cloned().unwrap_or(json!([])),
        overrides: params.get("overrides").cloned().unwrap_or(Value::Null),
    };
    // Stays running until every validator uploaded its artifacts (or the task is cancelled or forgotten).
    loop {
        match genesis::missing_artifacts(&sim.bucket, &assembly) {
            Ok(missing) if missing.is_empty() => break,
            Ok(missing) => tracing::debug!(node = %node, ?missing, "Assembler waiting for genesis artifacts"),
            Err(e) => return failed(format!("reading the genesis bucket: {e:#}")),
        }
        tokio::time::sleep(ASSEMBLE_POLL).await;
        if sim.with(|s| s.current(node, id, run, epoch).is_none()) {
            return Outcome::Abandoned;
        }
    }
    let now = super::state::rfc3339(SystemTime::now());
    match genesis::assemble(&sim.bucket, &assembly, &now) {
        Ok(hash) => {
            let result = json!({"genesisHash": hash});
            completed_with(Some(result), move |n| n.genesis_hash = Some(hash))
        }
        Err(e) => failed(format!("assembling genesis: {e:#}")),
    }
}

fn configure_genesis(sim: &Sim, ceremony_node: bool, chain: Option<String>, params: &Value) -> Outcome {
    let expected = str_param(params, "expectedGenesisHash");
    let Some(chain) = chain else {
        if expected.is_some() {
            return failed("chainId is unknown: cannot find genesis.json to verify expectedGenesisHash");
        }
        // A node of a well-known chain: the real sidecar writes its embedded genesis.
        return completed(Some(json!({"source": "embedded"})));
    };
    let key = format!("{chain}/genesis.json");
    match sim.bucket.get(&key) {
        Err(e) => failed(format!("reading {key}: {e:#}")),
        Ok(Some(bytes)) => {
            let actual = genesis::sha256_hex(&bytes);
            if let Some(expected) = expected
                && expected != actual
            {
                return failed(format!(
                    "genesis hash mismatch: expected {expected}, {key} has {actual}"
                ));
            }
            let result = json!({"genesisHash": actual, "source": key});
            completed_with(Some(result), move |n| n.genesis_hash = Some(actual))
        }
        Ok(None) if ceremony_node || expected.is_some() => failed(format!(
            "{key} not found in the genesis bucket (the ceremony has not assembled it yet)"
        )),
        Ok(None) => completed(Some(json!({"source": "embedded"}))),
    }
}

fn set_genesis_peers(
    sim: &Sim,
    node: &NodeRef,
    identity: Option<&Identity>,
    chain: Option<String>,
) -> Outcome {
    let Some(chain) = chain else {
        return failed("chainId is unknown: pass params.chainId or run generate-identity with one");
    };
    let key = format!("{chain}/peers.json");
    let peers: Vec<String> = match sim.bucket.get_json(&key) {
        Err(e) => return failed(format!("reading {key}: {e:#}")),
        Ok(None) => return failed(format!("{key} not found in the genesis bucket")),
        Ok(Some(v)) => match serde_json::from_value(v) {
            Ok(p) => p,
            Err(e) => return failed(format!("{key} is not a list of peer addresses: {e}")),
        },
    };
    let own_id = identity.map(|i| genesis::node_id(&i.key.verifying_key()));
    let own_host = format!("@{}-0.{}.{}.", node.name, node.name, node.namespace);
    let peers: Vec<String> = peers
        .into_iter()
        .filter(|p| match &own_id {
            Some(id) => !p.starts_with(&format!("{id}@")),
            None => !p.contains(&own_host),
        })
        .collect();
    let result = json!({"peers": peers});
    completed_with(Some(result), move |n| n.peers = peers)
}
