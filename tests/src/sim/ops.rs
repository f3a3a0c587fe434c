//! Day-2 operations (issue 12, item 5; reference spec section 5.4): seid control (`stop-seid`, `restart-seid`,
//! `reset-data`), `await-condition` against the simulated chain's height, the gov transactions, and
//! `snapshot-upload-once` (the catalogue's `snapshot-now`).
//!
//! The gov tasks behave like seictl's: sign and broadcast, `taskID=<id>` appended to the memo, result
//! `GovTxResult {txHash, height, proposalId, code, codespace, rawLog, inclusionStatus}`, and no deduplication
//! whatsoever: every execution of a gov task is a new transaction on the chain, which is what the operator's
//! lookups must prevent. A tx included with a non-zero code (an unknown proposal, an upgrade height in the
//! past, or a `tx-code` fault) fails the task with `inclusionStatus: committed_failed`; a `tx-pending` fault
//! fails it with `inclusionStatus: pending` while the chain includes the tx (and its effect) anyway.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use super::exec::{Outcome, completed, completed_with, failed};
use super::faults::{Action, NodeRef};
use super::genesis;
use super::state::{Proposal, RESYNC_TIME, Sim, State, Tx};

/// How often a running `await-condition` looks at the node's `/status` again.
const AWAIT_POLL: Duration = Duration::from_millis(50);
/// Bytes a block leaves in `data/` (what `reset-data` reports as wiped).
const BYTES_PER_BLOCK: u64 = 4096;

pub(super) fn stop_seid(sim: &Sim, node: &NodeRef) -> Outcome {
    let (height, running) = sim.with(|s| {
        let chain = s.chain.height();
        let seid = &s.node(node).seid;
        (seid.height(chain), seid.running())
    });
    if !running {
        // Not found in the PID namespace and the RPC does not answer: already stopped.
        return completed(Some(json!({"stopped": true, "height": height})));
    }
    completed_with(Some(json!({"stopped": true, "height": height})), move |n| {
        n.seid.stopped_at.get_or_insert(height);
    })
}

pub(super) fn restart_seid(sim: &Sim, node: &NodeRef) -> Outcome {
    let (chain, wiped, restarts) = sim.with(|s| {
        let chain = s.chain.height();
        let seid = &s.node(node).seid;
        (chain, seid.stopped_at == Some(0), seid.restarts)
    });
    // The RPC answers again: at height 1 on a wiped directory (syncing), else at the chain's height.
    let height = if wiped { 1 } else { chain };
    let result = json!({"height": height, "catchingUp": wiped, "restarts": restarts + 1});
    completed_with(Some(result), move |n| {
        // Restarted on a wiped data directory, the node syncs again before it reports caught up.
        if n.seid.stopped_at == Some(0) {
            n.seid.lag = chain.saturating_sub(1);
            n.seid.catching_up_until = Some(Instant::now() + RESYNC_TIME);
        }
        n.seid.stopped_at = None;
        n.seid.restarts += 1;
    })
}

pub(super) fn reset_data(sim: &Sim, node: &NodeRef) -> Outcome {
    let (height, running) = sim.with(|s| {
        let chain = s.chain.height();
        let seid = &s.node(node).seid;
        (seid.height(chain), seid.running())
    });
    if running {
        return failed(format!(
            "refusing to reset data: seid's RPC answers at height {height} (run stop-seid first)"
        ));
    }
    let wiped = height * BYTES_PER_BLOCK;
    completed_with(Some(json!({"wipedBytes": wiped})), |n| {
        n.seid.stopped_at = Some(0);
        n.seid.catching_up_until = None;
    })
}

pub(super) async fn await_condition(
    sim: &Sim,
    node: &NodeRef,
    (id, run, epoch): (Uuid, u32, u64),
    params: &Value,
) -> Outcome {
    let condition = params["condition"].as_str().unwrap_or_default().to_owned();
    let target = params["targetHeight"].as_u64();
    match (condition.as_str(), target) {
        ("height", Some(t)) if t >= 1 => {}
        ("height", _) => {
            return failed("await-condition: params.targetHeight (>= 1) is required for condition height");
        }
        ("catchingUp", _) => {}
        (other, _) => {
            return failed(format!(
                "await-condition: unknown condition {other:?} (height, catchingUp)"
            ));
        }
    }
    let sigterm = match params.get("action") {
        None | Some(Value::Null) => false,
        Some(a) if a == "SIGTERM_SEID" => true,
        Some(a) => return failed(format!("await-condition: unknown action {a} (SIGTERM_SEID)")),
    };
    // Polls the local /status until the condition holds; a stopped seid does not answer, so it keeps waiting.
    loop {
        let seen = sim.with(|s| {
            s.current(node, id, run, epoch)?;
            let chain = s.chain.height();
            let seid = &s.node(node).seid;
            let height = seid.height(chain);
            let met = seid.running()
                && match target {
                    Some(t) if condition == "height" => height >= t,
                    _ => !seid.catching_up() && height > 1,
                };
            Some(met.then_some(height))
        });
        match seen {
            None => return Outcome::Abandoned,
            Some(Some(height)) => {
                let result = json!({"condition": condition, "observedValue": height, "height": height,
                    "catchingUp": false, "action": sigterm.then_some("SIGTERM_SEID")});
                return if sigterm {
                    completed_with(Some(result), move |n| n.seid.stopped_at = Some(height))
                } else {
                    completed(Some(result))
                };
            }
            Some(None) => tokio::time::sleep(AWAIT_POLL).await,
        }
    }
}

pub(super) fn snapshot_upload_once(sim: &Sim, node: &NodeRef, chain: Option<String>) -> Outcome {
    let Some(chain) = chain else {
        return failed("chainId is unknown: pass params.chainId or run generate-identity with one");
    };
    let height = sim.with(|s| {
        let h = s.chain.height();
        s.node(node).seid.height(h)
    });
    if height == 0 {
        return failed("no local snapshot: the data directory is empty (reset-data ran since)");
    }
    let key = format!("{chain}/state-sync/{height}.tar.gz");
    let manifest = json!({"chainId": chain, "height": height, "node": node.to_string()});
    match sim.bucket.put_json(&key, &manifest) {
        Ok(_) => completed(Some(json!({"height": height, "key": key}))),
        Err(e) => failed(format!("uploading {key}: {e:#}")),
    }
}

/// `gov-vote`, `gov-software-upgrade`, `gov-param-change`: one broadcast per execution.
pub(super) fn gov(
    sim: &Sim,
    node: &NodeRef,
    (id, run, epoch): (Uuid, u32, u64),
    task_type: &str,
    params: &Value,
) -> Outcome {
    sim.with(|s| {
        if s.current(node, id, run, epoch).is_none() {
            return Outcome::Abandoned;
        }
        if !s.node(node).seid.running() {
            return failed("broadcasting: seid's RPC at 127.0.0.1:26657 does not answer (seid is stopped)");
        }
        let fault = s.take_tx_fault(node, task_type, id, run);
        broadcast(s, node, (id, run), task_type, params, fault.as_ref())
    })
}

fn broadcast(
    s: &mut State,
    node: &NodeRef,
    (id, run): (Uuid, u32),
    task_type: &str,
    params: &Value,
    fault: Option<&Action>,
) -> Outcome {
    let height = s.chain.height() + 1;
    let user_memo = params["memo"].as_str().unwrap_or_default();
    let memo = format!("{user_memo} taskID={id}").trim().to_owned();
    let hash = genesis::sha256_hex(format!("tx/{node}/{id}/{run}/{task_type}").as_bytes()).to_uppercase();
    let voter = params["keyName"]
        .as_str()
        .map_or_else(|| node.to_string(), |k| format!("{node}/{k}"));
    let (code, codespace, raw_log) = match fault {
        Some(Action::TxCode { code, log }) => (
            *code,
            "sdk",
            log.clone()
                .unwrap_or_else(|| format!("injected fault: tx failed with code {code}")),
        ),
        _ => check_tx(s, task_type, params, height),
    };
    let pending = fault == Some(&Action::TxPending);
    let proposal_id = if code == 0 {
        take_effect(s, task_type, params, voter, &hash)
    } else {
        None
    };
    s.chain.txs.push(Tx {
        hash: hash.clone(),
        kind: task_type.to_owned(),
        node: node.clone(),
        task_id: id,
        run,
        memo,
        // A pending tx lands a block later than the sidecar waited for.
        height: Some(if pending { height + 1 } else { height }),
        code,
        raw_log: raw_log.clone(),
        proposal_id,
    });
    tracing::info!(node = %node, task.id = %id, tx = %hash, code, pending, "Tx broadcast");
    let mut result = json!({"txHash": hash, "height": height, "code": code, "codespace": codespace,
        "rawLog": raw_log});
    if let Some(p) = proposal_id {
        result["proposalId"] = json!(p);
    }
    if pending {
        result["height"] = json!(0);
        result["inclusionStatus"] = json!("pending");
        return Outcome::Failed {
            error: format!(
                "tx {hash} was accepted but not included while the sidecar waited; inclusion unknown"
            ),
            result: Some(result),
        };
    }
    if code != 0 {
        result["inclusionStatus"] = json!("committed_failed");
        return Outcome::Failed {
            error: format!("tx {hash} failed on chain: code {code} ({codespace}): {raw_log}"),
            result: Some(result),
        };
    }
    result["inclusionStatus"] = json!("committed_ok");
    completed(Some(result))
}

/// What an included tx with code 0 does: records the vote, or creates the proposal (its id returned).
fn take_effect(s: &mut State, task_type: &str, params: &Value, voter: String, hash: &str) -> Option<u64> {
    if task_type == "gov-vote" {
        let option = params["option"].as_str().unwrap_or("yes").replace('-', "_");
        if let Some(p) = params["proposalId"]
            .as_u64()
            .and_then(|p| s.chain.proposals.get_mut(&p))
        {
            p.votes.insert(voter, option);
        }
        return None;
    }
    let id = s.chain.proposals.len() as u64 + 1;
    let (kind, content) = if task_type == "gov-software-upgrade" {
        let plan = json!({"name": params["upgradeName"], "height": params["upgradeHeight"],
            "info": params["upgradeInfo"]});
        ("software-upgrade", plan)
    } else {
        ("param-change", params["changes"].clone())
    };
    s.chain.proposals.insert(
        id,
        Proposal {
            id,
            kind: kind.to_owned(),
            title: params["title"].as_str().unwrap_or_default().to_owned(),
            content,
            tx_hash: hash.to_owned(),
            votes: std::collections::BTreeMap::new(),
        },
    );
    Some(id)
}

/// What the chain's ante handler and gov module say about the tx at `height`: `(code, codespace, raw log)`.
fn check_tx(s: &State, task_type: &str, params: &Value, height: u64) -> (u32, &'static str, String) {
    match task_type {
        "gov-vote" => {
            let pid = params["proposalId"].as_u64().unwrap_or(0);
            if s.chain.proposals.contains_key(&pid) {
                (0, "", String::new())
            } else {
                (2, "gov", format!("{pid}: unknown proposal"))
            }
        }
        "gov-software-upgrade" => {
            let at = params["upgradeHeight"].as_u64().unwrap_or(0);
            if at > height {
                (0, "", String::new())
            } else {
                (
                    18,
                    "sdk",
                    format!(
                        "upgrade cannot be scheduled in the past: height {at} <= {height}: invalid request"
                    ),
                )
            }
        }
        _ => match params["changes"].as_array() {
            Some(c) if !c.is_empty() => (0, "", String::new()),
            _ => (18, "sdk", "no parameter changes: invalid request".to_owned()),
        },
    }
}

// ---------------------------------------------------------------------------------------------------------
// Admin surface of the chain and of seid (merged into the router by `http`)

type Shared = axum::extract::State<std::sync::Arc<Sim>>;

/// `GET|POST /admin/chain`, `GET|POST /admin/nodes/{ns}/{name}/seid`.
pub(super) fn admin_routes() -> axum::Router<std::sync::Arc<Sim>> {
    use axum::routing::get;
    axum::Router::new()
        .route("/admin/chain", get(show_chain).post(set_chain))
        .route("/admin/nodes/{ns}/{name}/seid", get(show_seid).post(set_seid))
}

fn bad_request(message: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        axum::http::StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}

fn duration_field(body: &Value, key: &str) -> Result<Option<Duration>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => humantime::parse_duration(s)
            .map(Some)
            .map_err(|e| format!("{key} {s:?}: {e}")),
        Some(other) => Err(format!(
            "{key} must be a duration string like \"400ms\", not {other}"
        )),
    }
}

async fn show_chain(axum::extract::State(sim): Shared) -> axum::Json<Value> {
    axum::Json(sim.with(|s| s.chain.to_json()))
}

/// `{"height"?: N, "blockTime"?: "400ms" ("0s" halts the chain)}`.
async fn set_chain(
    axum::extract::State(sim): Shared,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let block_time = match duration_field(&body, "blockTime") {
        Ok(t) => t,
        Err(e) => return bad_request(&e),
    };
    let height = match body.get("height") {
        None | Some(Value::Null) => None,
        Some(h) => match h.as_u64() {
            Some(h) => Some(h),
            None => return bad_request(&format!("height must be a non-negative integer, not {h}")),
        },
    };
    let view = sim.with(|s| {
        s.chain.set(height, block_time);
        s.chain.to_json()
    });
    tracing::info!(height = view["height"].as_u64(), "Chain set");
    axum::Json(view).into_response()
}

async fn show_seid(
    axum::extract::State(sim): Shared,
    axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>,
) -> axum::Json<Value> {
    let node = NodeRef::new(ns, name);
    axum::Json(sim.with(|s| {
        let chain = s.chain.height();
        s.node(&node).seid.to_json(chain)
    }))
}

/// `{"running"?: bool, "catchingUpFor"?: "5s", "lag"?: N}`: stop or start seid, or make it report catching up
/// (`lag` blocks behind the chain) for a while.
async fn set_seid(
    axum::extract::State(sim): Shared,
    axum::extract::Path((ns, name)): axum::extract::Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let node = NodeRef::new(ns, name);
    let catching_up_for = match duration_field(&body, "catchingUpFor") {
        Ok(t) => t,
        Err(e) => return bad_request(&e),
    };
    let view = sim.with(|s| {
        let chain = s.chain.height();
        let seid = &mut s.node(&node).seid;
        match body.get("running").and_then(Value::as_bool) {
            Some(false) => {
                let at = seid.height(chain);
                seid.stopped_at.get_or_insert(at);
            }
            Some(true) => seid.stopped_at = None,
            None => {}
        }
        if let Some(lag) = body.get("lag").and_then(Value::as_u64) {
            seid.lag = lag;
        }
        if let Some(d) = catching_up_for {
            seid.catching_up_until = Some(Instant::now() + d);
        }
        seid.to_json(chain)
    });
    axum::Json(view).into_response()
}
