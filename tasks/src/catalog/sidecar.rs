//! Sidecar-side tasks: each is submitted once to the node's sidecar under the attempt's idempotency key
//! (`POST /v0/tasks`), then polled (`GET /v0/tasks/{key}`). A retry is a new attempt, so a new key and a new
//! submission (DESIGN.md section 5, item 3).
//!
//! A start first looks the key up (`GET /v0/tasks/{key}`) and adopts what the sidecar knows (running, completed
//! or failed); it submits only on a 404. A start can repeat, since effects precede the status write that records
//! them, and the sidecar re-executes a failed id on re-submission: without the lookup, an attempt that failed
//! in that window would run twice and consume no retry.
//!
//! # Day-2 task types
//!
//! The operations a user's workflow runs against a live node (reference spec sections 2.7 and 5.4). Params
//! are camelCase JSON, checked against the type's schema when the workflow compiles; outputs are the
//! sidecar's result, compacted ([`compact_outputs`]). Every one is submitted once per attempt and adopted by
//! key on a repeated start, like every sidecar task; the table says what more each needs.
//!
//! | type | params | outputs | idempotency |
//! |---|---|---|---|
//! | `stop-seid` | — | `stopped`, `height` | SIGTERM, waits, never SIGKILL; an already stopped seid is success |
//! | `restart-seid` | — | `height`, `catchingUp`, `restarts` | SIGTERM, kubelet restarts the container, waits for the RPC; a repeat restarts again, which is harmless |
//! | `reset-data` | — | `wipedBytes` | refuses while seid's RPC answers (stop it first); wiping a wiped directory wipes nothing |
//! | `await-condition` | `condition` (`height` or `catchingUp`), `targetHeight` (≥ 1, required for `height`), `action`? (`SIGTERM_SEID`) | `condition`, `observedValue` (the height), `height`, `catchingUp` | a query until the condition holds; bound it with the task's `timeout` (the sidecar waits forever) |
//! | `gov-vote` | `proposalId` (≥ 1), `option` (`yes`, `no`, `abstain`, `no_with_veto`), `fees`, `gas` (≥ 1), `chainId`?, `keyName`?, `memo`? | `txHash`, `height`, `code`, `codespace`, `rawLog`, `inclusionStatus` | see [`ChainTx`]: a new attempt adopts an earlier attempt's committed vote; a vote in doubt is cast again (it replaces the first) |
//! | `gov-software-upgrade` | `title`, `description`, `upgradeName`, `upgradeHeight` (≥ 1), `upgradeInfo`?, `initialDeposit`, `fees`, `gas`, `chainId`?, `keyName`?, `memo`? | as `gov-vote`, plus `proposalId` | see [`ChainTx`]: a new attempt adopts an earlier committed proposal and refuses (terminal) to propose again while an earlier tx is `pending`/`unverifiable` |
//! | `gov-param-change` | `title`, `description`, `changes` (≥ 1 of `subspace`, `key`, `value`), `initialDeposit`, `fees`, `gas`, `chainId`?, `keyName`?, `memo`? | as `gov-software-upgrade` | as `gov-software-upgrade` |
//! | `snapshot-now` | `chainId`? | `height`, `key` (`<chainId>/state-sync/<height>.tar.gz`) | seictl's `snapshot-upload-once`: uploads the newest local snapshot; a repeat overwrites the same object |
//!
//! A gov task succeeds only on `inclusionStatus: committed_ok`. `committed_failed` (included with a non-zero
//! code: unknown or inactive proposal, upgrade height not in the future, out of gas) fails the attempt as
//! terminal; `pending` or `unverifiable` fails it as transient, and the next attempt's lookup decides.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use sei_engine::{ErrorClass, idempotency_key};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::sidecar::{self, SubmitTask, TaskStatus};
use crate::task::{Context, Invocation, Outcome, Task, schema_of};

/// A sidecar task whose params are `P`.
pub struct SidecarTask<P> {
    task_type: &'static str,
    wire_type: &'static str,
    chain_tx: Option<ChainTx>,
    detached: bool,
    _params: PhantomData<fn() -> P>,
}

impl<P> SidecarTask<P> {
    /// The sidecar task `task_type` (the same name on the wire and in workflows).
    #[must_use]
    pub const fn new(task_type: &'static str) -> Self {
        Self {
            task_type,
            wire_type: task_type,
            chain_tx: None,
            detached: false,
            _params: PhantomData,
        }
    }

    /// Submits under the sidecar's name `wire_type` (e.g. `snapshot-now` is seictl's `snapshot-upload-once`).
    #[must_use]
    pub const fn on_wire(mut self, wire_type: &'static str) -> Self {
        self.wire_type = wire_type;
        self
    }

    /// The sidecar's task runs for the life of the node (an exporter): the attempt succeeds once the sidecar has
    /// accepted it and reports it `running` (or finished), with the output `detached: true`; a `failed` still
    /// fails it.
    #[must_use]
    pub const fn detached(mut self) -> Self {
        self.detached = true;
        self
    }

    /// The task broadcasts a transaction of kind `kind`: its result is seictl's `GovTxResult` (`txHash`,
    /// `height`, `proposalId`, `code`, `codespace`, `rawLog`, `inclusionStatus`), and a new attempt first looks
    /// up the transactions of the run's earlier attempts (see [`ChainTx`]).
    #[must_use]
    pub const fn broadcasts(mut self, kind: ChainTx) -> Self {
        self.chain_tx = Some(kind);
        self
    }
}

/// What kind of transaction a gov task broadcasts, which decides what a new attempt does when an earlier
/// attempt of the same run broadcast one whose inclusion is unknown (`pending` or `unverifiable`).
///
/// The sidecar signs and broadcasts, appending `taskID=<attempt key>` to the memo. A chain does not deduplicate
/// transactions by memo, and a proposal submitted twice is two proposals (two deposits, two votes to run), so
/// before a new attempt (a new key) submits, it looks up every earlier attempt of the run under its key
/// (`GET /v0/tasks/{key}`, keys derived from the plan id in the owner's `status.plan.id`, checked against the
/// current attempt's key) and:
///
/// | earlier attempt's tx | proposal | vote |
/// |---|---|---|
/// | `committed_ok` | adopted (`Done` with its result, `adoptedFromAttempt`) | adopted |
/// | `pending` / `unverifiable` | terminal failure naming the tx hash: it may still land | submitted again |
/// | still `running` | no observation: start again later | no observation |
/// | `committed_failed`, no tx, unknown | submitted | submitted |
///
/// A second vote with the same option replaces the first on chain, so re-voting is safe; a second proposal is
/// not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainTx {
    /// A proposal submission (`gov-software-upgrade`, `gov-param-change`): never broadcast twice.
    Proposal,
    /// A vote (`gov-vote`): a repeat only replaces the earlier vote.
    Vote,
}

/// The `inclusionStatus` of a gov tx result that means the tx is on chain and succeeded.
pub const COMMITTED_OK: &str = "committed_ok";
/// The `inclusionStatus` of a tx included with a non-zero code: on chain, but it changed nothing.
pub const COMMITTED_FAILED: &str = "committed_failed";

/// Params a sidecar task can check beyond their schema (conditional requirements), before anything is sent.
pub trait Params: JsonSchema + Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static {
    /// `Err(message)` naming the field when the params are inconsistent.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// `Some(outputs)`: the params say there is nothing to do; the attempt succeeds without a submission.
    fn skip(&self) -> Option<Map<String, Value>> {
        None
    }

    /// The params as the sidecar gets them (default: as they are).
    fn wire(self) -> Value
    where
        Self: Sized,
    {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// How a sidecar error becomes an outcome: connect errors, timeouts and 5xx say nothing about the task
/// (`Unavailable`: no attempt consumed); a 404 on poll is `NotFound`; the rest fails the attempt.
fn from_client_error(e: &sidecar::Error, poll: bool) -> Outcome {
    match e.class() {
        sidecar::ErrorClass::Transient => Outcome::Unavailable(e.to_string()),
        sidecar::ErrorClass::NotFound if poll => Outcome::NotFound,
        sidecar::ErrorClass::NotFound | sidecar::ErrorClass::Terminal => {
            Outcome::failed(ErrorClass::Terminal, e.to_string())
        }
    }
}

/// A sidecar `failed` result: the attempt failed. Class `Transient` (the handler failed on the node; a new
/// attempt may succeed, if the workflow allows one), except a genesis hash mismatch, which is terminal
/// (DESIGN.md section 5, item 7). Diagnostics in the result (config-validate) are kept in the message.
fn failed_result(task_type: &str, error: Option<&str>, result: Option<&Value>) -> Outcome {
    let mut message = error
        .unwrap_or("the sidecar reported failure without a message")
        .to_owned();
    if let Some(diagnostics) = result.and_then(|r| r.get("diagnostics")) {
        message = format!("{message}; diagnostics: {diagnostics}");
    }
    // An on-chain rejection (`committed_failed`: unknown or inactive proposal, upgrade height in the past)
    // is final for that tx; retrying would sign the same rejected content again.
    let rejected_on_chain = result
        .and_then(|r| r.get("inclusionStatus"))
        .and_then(Value::as_str)
        == Some(COMMITTED_FAILED);
    if let Some(r) = result.filter(|r| r.get("txHash").is_some()) {
        message = format!(
            "{message} (tx {}, inclusion {}, code {})",
            r["txHash"].as_str().unwrap_or("?"),
            r["inclusionStatus"].as_str().unwrap_or("unknown"),
            r["code"]
        );
    }
    let terminal = rejected_on_chain
        || (task_type == "configure-genesis" && message.to_ascii_lowercase().contains("mismatch"));
    let class = if terminal {
        ErrorClass::Terminal
    } else {
        ErrorClass::Transient
    };
    Outcome::failed(class, format!("{task_type} failed on the sidecar: {message}"))
}

fn outputs(result: Option<Value>) -> Map<String, Value> {
    match result {
        Some(Value::Object(map)) => map,
        Some(Value::Null) | None => Map::new(),
        Some(other) => Map::from_iter([("result".to_owned(), other)]),
    }
}

/// Outputs of a sidecar task as the journal keeps them (DESIGN.md section 4: large data moves by reference,
/// never as task outputs): `set-genesis-peers`' `peers` array (about 100 bytes a validator; the list stays in
/// the bucket's `<chainId>/peers.json` and on the node) becomes `peerCount` and `peersSha256` (SHA-256 of the
/// addresses, sorted, one per line); any other output longer than [`MAX_INLINE_OUTPUT`] bytes becomes
/// `<key>Sha256`. Without it a 60-validator ceremony's run exceeded the journal's 4 KiB output cap.
#[must_use]
pub fn compact_outputs(outcome: Outcome) -> Outcome {
    let Outcome::Done(outputs) = outcome else {
        return outcome;
    };
    let mut compact = Map::new();
    for (key, value) in outputs {
        let inline = serde_json::to_string(&value).map_or(usize::MAX, |s| s.len());
        match value {
            Value::Array(items) if key == "peers" => {
                let mut lines: Vec<String> = items
                    .iter()
                    .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                    .collect();
                lines.sort();
                compact.insert("peerCount".to_owned(), json!(lines.len()));
                compact.insert("peersSha256".to_owned(), json!(sha256_lines(&lines)));
            }
            value if inline > MAX_INLINE_OUTPUT => {
                compact.insert(format!("{key}Sha256"), json!(sha256_lines(&[value.to_string()])));
            }
            value => {
                compact.insert(key, value);
            }
        }
    }
    Outcome::Done(compact)
}

/// Longest output value a sidecar task keeps inline in the journal.
pub const MAX_INLINE_OUTPUT: usize = 256;

fn sha256_lines(lines: &[String]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for line in lines {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().fold(String::with_capacity(64), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// The failpoint that makes sidecar starts submit blindly, without looking the attempt up first. Only for the
/// chaos test's negative run (it must then find duplicate executions); never configured in production.
pub const SKIP_LOOKUP_FAILPOINT: &str = "sidecar::skip-submit-lookup";

impl<P> SidecarTask<P> {
    /// What the sidecar's record of an attempt means for it.
    fn outcome_of(&self, result: sidecar::TaskResult) -> Outcome {
        match result.status {
            TaskStatus::Running if self.detached => {
                Outcome::Done(Map::from_iter([("detached".to_owned(), json!(true))]))
            }
            TaskStatus::Running => Outcome::Running,
            TaskStatus::Completed
                if self.chain_tx.is_some() && inclusion(result.result.as_ref()) != Some(COMMITTED_OK) =>
            {
                // A sidecar that completes with a tx not (yet) known to be included: not a success.
                let why = format!(
                    "tx inclusion is {}",
                    inclusion(result.result.as_ref()).unwrap_or("not reported")
                );
                failed_result(self.task_type, Some(&why), result.result.as_ref())
            }
            TaskStatus::Completed => compact_outputs(Outcome::Done(outputs(result.result))),
            TaskStatus::Failed => {
                failed_result(self.task_type, result.error.as_deref(), result.result.as_ref())
            }
        }
    }
}

fn inclusion(result: Option<&Value>) -> Option<&str> {
    result?.get("inclusionStatus")?.as_str()
}

impl<P> SidecarTask<P> {
    /// For a task that broadcasts: what the earlier attempts of this run already put on chain (see [`ChainTx`]).
    /// `None`: nothing to adopt or fear, submit; `Some(outcome)`: the start's outcome instead of a submission.
    async fn earlier_tx(&self, node: &sidecar::NodeClient, inv: &Invocation) -> Option<Outcome> {
        let kind = self.chain_tx?;
        if inv.task.attempt <= 1 {
            return None;
        }
        let plan = inv
            .owner_object
            .pointer("/status/plan/id")
            .and_then(Value::as_str)
            .and_then(|id| uuid::Uuid::parse_str(id).ok());
        // The keys of earlier attempts are derived from the plan id; a snapshot of another plan would name
        // other keys, so the derivation must give back this attempt's own key first.
        let Some(plan) =
            plan.filter(|p| idempotency_key(*p, &inv.task.task, inv.task.attempt) == inv.task.key)
        else {
            tracing::warn!(task.id = %inv.task.key, task.kind = self.task_type, "Cannot derive the keys of earlier attempts from the owner's plan; submitting without looking them up");
            return None;
        };
        let mut in_doubt = None;
        for attempt in (1..inv.task.attempt).rev() {
            let key = idempotency_key(plan, &inv.task.task, attempt);
            let found = match node.task(key).await {
                Ok(found) => found,
                Err(e) if e.class() == sidecar::ErrorClass::NotFound => continue,
                // Not knowing is not a licence to broadcast again.
                Err(e) => return Some(from_client_error(&e, false)),
            };
            if found.status == TaskStatus::Running {
                return Some(Outcome::Unavailable(format!(
                    "attempt {attempt} of {} ({key}) is still running on the sidecar; waiting for its tx before submitting again",
                    self.task_type
                )));
            }
            let tx = found
                .result
                .as_ref()
                .and_then(|r| r.get("txHash"))
                .and_then(Value::as_str);
            match (inclusion(found.result.as_ref()), tx) {
                (Some(COMMITTED_OK), Some(_)) => {
                    tracing::info!(task.id = %inv.task.key, earlier = %key, attempt, "Adopted the committed tx of an earlier attempt");
                    let mut out = outputs(found.result);
                    out.insert("adoptedFromAttempt".to_owned(), json!(attempt));
                    return Some(compact_outputs(Outcome::Done(out)));
                }
                (Some(status), Some(hash)) if status != COMMITTED_FAILED && in_doubt.is_none() => {
                    in_doubt = Some((attempt, hash.to_owned(), status.to_owned()));
                }
                _ => {}
            }
        }
        match (kind, in_doubt) {
            (ChainTx::Proposal, Some((attempt, hash, status))) => Some(Outcome::terminal(format!(
                "{}: attempt {attempt} broadcast tx {hash} whose inclusion is {status}; not submitting the proposal \
                 again, which could create a second one. Look the tx up on chain, then retry the plan",
                self.task_type
            ))),
            _ => None,
        }
    }
}

impl<P: Params> Task for SidecarTask<P> {
    fn task_type(&self) -> &'static str {
        self.task_type
    }

    fn params_schema(&self) -> Value {
        schema_of::<P>()
    }

    fn start<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            // Round-trip through the typed params: what goes on the wire is exactly what the schema allows.
            let params: P = match inv.params() {
                Ok(p) => p,
                Err(outcome) => return outcome,
            };
            if let Err(why) = params.check() {
                return Outcome::failed(
                    ErrorClass::Invalid,
                    format!("invalid params for {}: {why}", self.task_type),
                );
            }
            if let Some(outputs) = params.skip() {
                return Outcome::Done(outputs);
            }
            let params = params.wire();
            let node = cx
                .sidecar
                .node(&inv.namespace, inv.target())
                .with_traceparent(inv.traceparent.as_deref());
            // Recovery by lookup (the engine's delivery contract): this start may repeat one whose journal entry
            // was lost (a crash or a 409 before the status write). The sidecar re-executes a *failed* id that is
            // submitted again, so adopt what it already knows of this attempt and submit only when it knows
            // nothing. The failpoint turns the lookup off, to show the chaos test catches the duplicates.
            if fail::eval(SKIP_LOOKUP_FAILPOINT, |_| ()).is_none() {
                match node.task(inv.task.key).await {
                    Ok(found) => {
                        tracing::debug!(task.id = %inv.task.key, status = ?found.status, "Adopted an attempt the sidecar already knows");
                        return self.outcome_of(found);
                    }
                    Err(e) if e.class() == sidecar::ErrorClass::NotFound => {}
                    Err(e) => return from_client_error(&e, false),
                }
                if let Some(outcome) = self.earlier_tx(&node, inv).await {
                    return outcome;
                }
            }
            match node
                .submit(&SubmitTask::new(inv.task.key, self.wire_type, params))
                .await
            {
                Ok(_) => Outcome::Accepted,
                Err(e) => from_client_error(&e, false),
            }
        })
    }

    fn poll<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let node = cx
                .sidecar
                .node(&inv.namespace, inv.target())
                .with_traceparent(inv.traceparent.as_deref());
            match node.task(inv.task.key).await {
                Ok(result) => self.outcome_of(result),
                Err(e) => from_client_error(&e, true),
            }
        })
    }

    fn cancel<'a>(&'a self, cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let node = cx
                .sidecar
                .node(&inv.namespace, inv.target())
                .with_traceparent(inv.traceparent.as_deref());
            if let Err(e) = node.cancel(inv.task.key).await {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "Cancelling a sidecar task failed"
                );
            }
        })
    }
}

/// Params of tasks that take none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `snapshot-restore`: restore the highest snapshot at or below `targetHeight` (latest when absent).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotRestoreParams {
    /// Highest block height to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_height: Option<u64>,
}

/// `configure-genesis`: write genesis.json, verifying its SHA-256 when `expectedGenesisHash` is known.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigureGenesisParams {
    /// Chain id (the sidecar knows it from its environment when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Hex SHA-256 the genesis file must have; absent or empty: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_genesis_hash: Option<String>,
}

/// `config-apply`: render config.toml / app.toml from a mode and overrides.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigApplyParams {
    /// sei-config mode: `full`, `archive`, `validator` or `seed`.
    pub mode: String,
    /// Override maps applied before `overrides`, in order (later wins): the controller's common and per-mode
    /// settings (reference 2.4). Flattened into `overrides` on the wire, so the sidecar gets one intent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<BTreeMap<String, String>>,
    /// Dotted config keys to values (later sources win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, String>,
    /// Patch the on-disk config instead of rendering from scratch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
}

/// `config-patch`: deep-merge TOML trees into config files.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigPatchParams {
    /// File name (e.g. `config.toml`) to the tree to merge into it.
    pub files: BTreeMap<String, Value>,
}

/// `configure-state-sync`: write the `[statesync]` section.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigureStateSyncParams {
    /// Trust the locally restored snapshot's height.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_local_snapshot: bool,
    /// Light-client trust period (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_period: Option<String>,
    /// Blocks to backfill after the sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill_blocks: Option<u64>,
    /// Witness RPC servers (`host:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc_servers: Vec<String>,
}

/// `generate-identity`: node key, validator key and home for a new chain.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateIdentityParams {
    /// The new chain's id.
    pub chain_id: String,
    /// The node's moniker.
    pub moniker: String,
}

/// `generate-gentx`: the validator's genesis transaction.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateGentxParams {
    /// The new chain's id.
    pub chain_id: String,
    /// Self-delegation, e.g. `10000000usei`.
    pub staking_amount: String,
    /// Genesis balance of the validator account.
    pub account_balance: String,
}

/// `upload-genesis-artifacts`: publish the gentx and identity for the assembler.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadGenesisArtifactsParams {
    /// The chain id (the bucket prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// The node's name (the bucket folder).
    pub node_name: String,
}

/// `assemble-and-upload-genesis`: wait for every validator's artifacts, write genesis.json and peers.json.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssembleGenesisParams {
    /// The chain id.
    pub chain_id: String,
    /// Namespace of the validators.
    pub namespace: String,
    /// The validators' node names.
    pub nodes: Vec<String>,
    /// Default balance of validator accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_balance: Option<String>,
    /// Extra genesis accounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<Value>,
    /// Genesis overrides (dotted key -> JSON value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Value>,
}

/// `set-genesis-peers`: persistent peers from the ceremony's peers.json, without the node itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetGenesisPeersParams {
    /// The chain id (the bucket prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
}

/// `await-condition`: what to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AwaitedCondition {
    /// The node's latest block height is at least `targetHeight`.
    #[serde(rename = "height")]
    Height,
    /// The node has caught up: `catching_up` is false and its height is above 1.
    #[serde(rename = "catchingUp")]
    CatchingUp,
}

/// `await-condition`: what to do once the condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionAction {
    /// Send seid SIGTERM (it stops at the height reached, e.g. an upgrade height, without SIGKILL).
    #[serde(rename = "SIGTERM_SEID")]
    SigtermSeid,
}

/// `await-condition`: poll the node's local `/status` until the condition holds, then run the optional action.
/// The sidecar polls without a limit of its own: bound it with the task's `timeout`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// `targetHeight` is required unless the condition is `catchingUp`; the first branch's violation is the one
// reported ("required field is missing at /targetHeight").
#[schemars(extend("anyOf" = [
    {"required": ["targetHeight"]},
    {"properties": {"condition": {"const": "catchingUp"}}}
]))]
pub struct AwaitConditionParams {
    /// `height` (needs `targetHeight`) or `catchingUp`.
    pub condition: AwaitedCondition,
    /// For `height`: the block height to reach (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_height: Option<u64>,
    /// What to do once the condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ConditionAction>,
}

impl Params for AwaitConditionParams {
    fn check(&self) -> Result<(), String> {
        match (self.condition, self.target_height) {
            (AwaitedCondition::Height, None | Some(0)) => {
                Err("targetHeight (at least 1) is required when condition is height".to_owned())
            }
            _ => Ok(()),
        }
    }
}

/// `gov-vote` options (`no-with-veto` is accepted as a spelling of `no_with_veto`, as upstream does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoteOption {
    /// Yes.
    Yes,
    /// No.
    No,
    /// Abstain.
    Abstain,
    /// No with veto.
    NoWithVeto,
    /// No with veto, in the spelling upstream's SeiNodeTask also accepts (sent as is; the sidecar maps it).
    #[serde(rename = "no-with-veto")]
    NoWithVetoHyphenated,
}

/// `gov-vote`: sign a vote with the node's operator key and broadcast it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GovVoteParams {
    /// Chain id (the sidecar knows it from its environment when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Keyring key to sign with (the sidecar's default key when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// The proposal to vote on.
    #[schemars(range(min = 1))]
    pub proposal_id: u64,
    /// The vote.
    pub option: VoteOption,
    /// Tx memo; the sidecar appends `taskID=<attempt key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// Fees, e.g. `4000usei`.
    pub fees: String,
    /// Gas limit.
    #[schemars(range(min = 1))]
    pub gas: u64,
}

/// `gov-software-upgrade`: submit a software-upgrade proposal with its initial deposit.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GovSoftwareUpgradeParams {
    /// Chain id (the sidecar knows it from its environment when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Keyring key to sign with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Proposal title.
    #[schemars(length(min = 1))]
    pub title: String,
    /// Proposal description.
    pub description: String,
    /// The upgrade's name (the handler name in the new binary).
    #[schemars(length(min = 1))]
    pub upgrade_name: String,
    /// The height at which the chain halts for the upgrade.
    #[schemars(range(min = 1))]
    pub upgrade_height: u64,
    /// Upgrade info (binaries JSON or a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_info: Option<String>,
    /// Initial deposit, e.g. `10000000usei`.
    pub initial_deposit: String,
    /// Tx memo; the sidecar appends `taskID=<attempt key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// Fees.
    pub fees: String,
    /// Gas limit.
    #[schemars(range(min = 1))]
    pub gas: u64,
}

/// One parameter change of a `gov-param-change` proposal.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParamChange {
    /// Module subspace, e.g. `staking`.
    #[schemars(length(min = 1))]
    pub subspace: String,
    /// Parameter key, e.g. `MaxValidators`.
    #[schemars(length(min = 1))]
    pub key: String,
    /// The new value (raw JSON).
    pub value: Value,
}

/// `gov-param-change`: submit a parameter-change proposal with its initial deposit.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GovParamChangeParams {
    /// Chain id (the sidecar knows it from its environment when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Keyring key to sign with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Proposal title.
    #[schemars(length(min = 1))]
    pub title: String,
    /// Proposal description.
    pub description: String,
    /// The changes (at least one).
    #[schemars(length(min = 1))]
    pub changes: Vec<ParamChange>,
    /// Initial deposit.
    pub initial_deposit: String,
    /// Tx memo; the sidecar appends `taskID=<attempt key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// Fees.
    pub fees: String,
    /// Gas limit.
    #[schemars(range(min = 1))]
    pub gas: u64,
}

impl Params for GovParamChangeParams {
    fn check(&self) -> Result<(), String> {
        if self.changes.is_empty() {
            return Err("changes must list at least one change".to_owned());
        }
        Ok(())
    }
}

/// `snapshot-now`: upload the node's newest local state-sync snapshot to the snapshot bucket now (seictl's
/// `snapshot-upload-once`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotNowParams {
    /// The chain id (the bucket prefix; the sidecar knows it from its environment when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
}

/// `result-export` (a replayer's `spec.replayer.resultExport`): seictl's result exporter, comparing the
/// replayed block results against a canonical RPC endpoint (`shadowResult`). Submitted after `mark-ready`,
/// detached: it runs as long as the replay does.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultExportParams {
    /// `resultExport.shadowResult.canonicalRpc`: the endpoint whose results the replay is compared against.
    #[serde(default)]
    pub canonical_rpc: String,
}

impl Params for ResultExportParams {
    fn check(&self) -> Result<(), String> {
        if self.canonical_rpc.is_empty() {
            return Err("canonicalRpc must not be empty".to_owned());
        }
        Ok(())
    }
}

impl Params for NoParams {}
impl Params for SnapshotRestoreParams {}
impl Params for ConfigureGenesisParams {}
impl Params for ConfigApplyParams {
    fn wire(self) -> Value {
        let mut overrides = BTreeMap::new();
        for layer in self.layers {
            overrides.extend(layer);
        }
        overrides.extend(self.overrides);
        let intent = Self {
            mode: self.mode,
            layers: Vec::new(),
            overrides,
            incremental: self.incremental,
        };
        serde_json::to_value(intent).unwrap_or(Value::Null)
    }
}

/// `restart-seid`: SIGTERM seid and wait for its RPC.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartSeidParams {
    /// `false`: nothing needs a restart (e.g. `${ tasks.<config-patch>.outputs.restartRequired }`); the
    /// attempt succeeds without asking the sidecar (outputs `skipped: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

impl Params for RestartSeidParams {
    fn skip(&self) -> Option<Map<String, Value>> {
        (self.required == Some(false)).then(|| Map::from_iter([("skipped".to_owned(), json!(true))]))
    }

    fn wire(self) -> Value {
        json!({})
    }
}
impl Params for ConfigPatchParams {}
impl Params for ConfigureStateSyncParams {
    /// An empty trust period and zero backfill blocks (a workflow's "not set") are left out.
    fn wire(mut self) -> Value {
        self.trust_period = self.trust_period.filter(|t| !t.is_empty());
        self.backfill_blocks = self.backfill_blocks.filter(|b| *b > 0);
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
impl Params for GenerateIdentityParams {}
impl Params for GenerateGentxParams {}
impl Params for UploadGenesisArtifactsParams {}
impl Params for AssembleGenesisParams {}
impl Params for SetGenesisPeersParams {}
impl Params for GovVoteParams {}
impl Params for GovSoftwareUpgradeParams {}
impl Params for SnapshotNowParams {}

/// Every sidecar task type the workflows use.
pub(crate) fn register(r: crate::task::Registry) -> crate::task::Registry {
    r.with(SidecarTask::<SnapshotRestoreParams>::new("snapshot-restore"))
        .with(SidecarTask::<ConfigureGenesisParams>::new("configure-genesis"))
        .with(SidecarTask::<ConfigApplyParams>::new("config-apply"))
        .with(SidecarTask::<ConfigPatchParams>::new("config-patch"))
        .with(SidecarTask::<NoParams>::new("config-validate"))
        .with(SidecarTask::<ConfigureStateSyncParams>::new(
            "configure-state-sync",
        ))
        .with(SidecarTask::<NoParams>::new("mark-ready"))
        .with(SidecarTask::<NoParams>::new("mark-not-ready"))
        .with(SidecarTask::<GenerateIdentityParams>::new("generate-identity"))
        .with(SidecarTask::<GenerateGentxParams>::new("generate-gentx"))
        .with(SidecarTask::<UploadGenesisArtifactsParams>::new(
            "upload-genesis-artifacts",
        ))
        .with(SidecarTask::<AssembleGenesisParams>::new(
            "assemble-and-upload-genesis",
        ))
        .with(SidecarTask::<SetGenesisPeersParams>::new("set-genesis-peers"))
        // Day-2 operations (issue 12, item 5).
        .with(SidecarTask::<NoParams>::new("stop-seid"))
        .with(SidecarTask::<RestartSeidParams>::new("restart-seid"))
        .with(SidecarTask::<NoParams>::new("reset-data"))
        .with(SidecarTask::<AwaitConditionParams>::new("await-condition"))
        .with(SidecarTask::<GovVoteParams>::new("gov-vote").broadcasts(ChainTx::Vote))
        .with(
            SidecarTask::<GovSoftwareUpgradeParams>::new("gov-software-upgrade")
                .broadcasts(ChainTx::Proposal),
        )
        .with(
            SidecarTask::<GovParamChangeParams>::new("gov-param-change").broadcasts(ChainTx::Proposal),
        )
        .with(SidecarTask::<SnapshotNowParams>::new("snapshot-now").on_wire("snapshot-upload-once"))
        .with(SidecarTask::<ResultExportParams>::new("result-export").detached())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_genesis_hash_mismatch_is_terminal_and_other_sidecar_failures_are_transient() {
        let Outcome::Failed(e) = failed_result(
            "configure-genesis",
            Some("genesis hash mismatch: want a, got b"),
            None,
        ) else {
            panic!("expected a failure")
        };
        assert_eq!(e.class, ErrorClass::Terminal);
        assert!(e.message.contains("want a, got b"));
        let Outcome::Failed(e) = failed_result("config-apply", Some("disk full"), None) else {
            panic!()
        };
        assert_eq!(e.class, ErrorClass::Transient);
    }

    #[test]
    fn config_validate_diagnostics_are_kept_in_the_error() {
        let result =
            serde_json::json!({"diagnostics": [{"field": "p2p.persistent_peers", "message": "bad"}]});
        let Outcome::Failed(e) = failed_result("config-validate", Some("invalid"), Some(&result)) else {
            panic!()
        };
        assert!(e.message.contains("p2p.persistent_peers"), "{}", e.message);
    }

    #[test]
    fn non_object_results_become_a_result_output() {
        assert_eq!(outputs(Some(Value::from(3)))["result"], 3);
        assert!(outputs(None).is_empty());
        assert_eq!(
            outputs(Some(serde_json::json!({"genesisHash": "ab"})))["genesisHash"],
            "ab"
        );
    }

    /// Compiles a one-task workflow of `task_type` with `params` against the catalogue.
    fn compile_one(task_type: &str, params: &str) -> Result<(), String> {
        let yaml = format!(
            "apiVersion: sei.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {{name: day2}}\nspec:\n  \
             target: SeiNode\n  tasks:\n    - {{name: t, type: {task_type}, params: {params}}}\n"
        );
        let def = sei_engine::WorkflowDefinition::from_yaml("day2.yaml", &yaml).map_err(|e| e.to_string())?;
        let inputs = sei_engine::Inputs::new(uuid::Uuid::nil(), sei_engine::Timestamp::from_unix_millis(0));
        sei_engine::compile(&def, &inputs, &crate::catalog::registry())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn day2_params_are_checked_when_a_workflow_compiles_and_errors_name_the_task_and_field() {
        let vote = "{proposalId: 3, option: yes, fees: 4000usei, gas: 200000}";
        let upgrade = "{title: v2, description: d, upgradeName: v2, upgradeHeight: 900, initialDeposit: 1usei, \
                       fees: 1usei, gas: 1}";
        let change = "{title: t, description: d, changes: [{subspace: staking, key: MaxValidators, value: 150}], \
                      initialDeposit: 1usei, fees: 1usei, gas: 1}";
        for (task_type, params) in [
            ("stop-seid", "{}"),
            ("restart-seid", "{}"),
            ("reset-data", "{}"),
            (
                "await-condition",
                "{condition: height, targetHeight: 100, action: SIGTERM_SEID}",
            ),
            ("await-condition", "{condition: catchingUp}"),
            ("gov-vote", vote),
            (
                "gov-vote",
                "{proposalId: 3, option: no-with-veto, fees: 1usei, gas: 1, keyName: op, memo: m}",
            ),
            ("gov-software-upgrade", upgrade),
            ("gov-param-change", change),
            ("snapshot-now", "{}"),
            ("snapshot-now", "{chainId: pacific-1}"),
        ] {
            compile_one(task_type, params).unwrap_or_else(|e| panic!("{task_type} {params}: {e}"));
        }
        for (task_type, params, field) in [
            ("stop-seid", "{force: true}", "force"),
            ("await-condition", "{condition: height}", "targetHeight"),
            (
                "await-condition",
                "{condition: height, targetHeight: 0}",
                "targetHeight",
            ),
            (
                "await-condition",
                "{condition: blockTime, targetHeight: 5}",
                "condition",
            ),
            (
                "await-condition",
                "{condition: height, targetHeight: 5, action: SIGKILL}",
                "action",
            ),
            (
                "gov-vote",
                "{proposalId: 3, option: maybe, fees: 1usei, gas: 1}",
                "option",
            ),
            ("gov-vote", "{proposalId: 3, option: yes, gas: 1}", "fees"),
            (
                "gov-vote",
                "{proposalId: 0, option: yes, fees: 1usei, gas: 1}",
                "proposalId",
            ),
            (
                "gov-software-upgrade",
                "{title: v2, description: d, upgradeName: v2, initialDeposit: 1usei, fees: 1usei, gas: 1}",
                "upgradeHeight",
            ),
            (
                "gov-param-change",
                "{title: t, description: d, changes: [], initialDeposit: 1usei, fees: 1usei, gas: 1}",
                "changes",
            ),
        ] {
            let e =
                compile_one(task_type, params).expect_err(&format!("{task_type} {params} must not compile"));
            assert!(
                e.contains("task `t`") && e.contains(task_type),
                "{task_type}: the task is named: {e}"
            );
            assert!(
                e.contains(field),
                "{task_type} {params}: the field {field} is named: {e}"
            );
        }
    }

    #[test]
    fn a_height_condition_without_a_height_is_refused_by_check_naming_the_field() {
        let p: AwaitConditionParams = serde_json::from_value(json!({"condition": "height"})).unwrap();
        assert!(p.check().unwrap_err().contains("targetHeight"));
        let p: AwaitConditionParams = serde_json::from_value(json!({"condition": "catchingUp"})).unwrap();
        assert_eq!(p.check(), Ok(()));
    }

    #[test]
    fn gov_tx_results_fail_the_attempt_unless_committed_ok_and_an_on_chain_rejection_is_terminal() {
        let task = SidecarTask::<GovVoteParams>::new("gov-vote").broadcasts(ChainTx::Vote);
        let result = |status: TaskStatus, inclusion: &str| sidecar::TaskResult {
            id: uuid::Uuid::nil(),
            task_type: "gov-vote".into(),
            status,
            run: 1,
            params: None,
            result: Some(json!({"txHash": "AB12", "height": 7, "code": 0, "inclusionStatus": inclusion})),
            error: (status == TaskStatus::Failed).then(|| "tx failed".to_owned()),
            submitted_at: String::new(),
            completed_at: None,
        };
        let Outcome::Done(out) = task.outcome_of(result(TaskStatus::Completed, COMMITTED_OK)) else {
            panic!("committed_ok is done")
        };
        assert_eq!(out["txHash"], "AB12");
        for (status, inclusion, class) in [
            (TaskStatus::Completed, "pending", ErrorClass::Transient),
            (TaskStatus::Completed, "unverifiable", ErrorClass::Transient),
            (TaskStatus::Failed, "pending", ErrorClass::Transient),
            (TaskStatus::Failed, COMMITTED_FAILED, ErrorClass::Terminal),
        ] {
            let Outcome::Failed(e) = task.outcome_of(result(status, inclusion)) else {
                panic!("{status:?} {inclusion} must fail the attempt")
            };
            assert_eq!(e.class, class, "{status:?} {inclusion}: {}", e.message);
            assert!(
                e.message.contains("AB12") && e.message.contains(inclusion),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn params_schemas_refuse_unknown_fields() {
        let schema = schema_of::<ConfigApplyParams>();
        assert_eq!(schema["additionalProperties"], Value::Bool(false));
        assert!(
            schema["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from("mode"))
        );
    }
}
