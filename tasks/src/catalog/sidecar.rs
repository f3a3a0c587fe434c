//! Sidecar-side tasks: each is submitted once to the node's sidecar under the attempt's idempotency key
//! (`POST /v0/tasks`), then polled (`GET /v0/tasks/{key}`). A retry is a new attempt, so a new key and a new
//! submission (DESIGN.md section 5, item 3).
//!
//! A start first looks the key up (`GET /v0/tasks/{key}`) and adopts what the sidecar knows (running, completed
//! or failed); it submits only on a 404. A start can repeat, since effects precede the status write that records
//! them, and the sidecar re-executes a failed id on re-submission: without the lookup, an attempt that failed
//! in that window would run twice and consume no retry.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use sei_engine::ErrorClass;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::sidecar::{self, SubmitTask, TaskStatus};
use crate::task::{Context, Invocation, Outcome, Task, schema_of};

/// A sidecar task whose params are `P`.
pub struct SidecarTask<P> {
    task_type: &'static str,
    _params: PhantomData<fn() -> P>,
}

impl<P> SidecarTask<P> {
    /// The sidecar task `task_type` (the same name on the wire and in workflows).
    #[must_use]
    pub const fn new(task_type: &'static str) -> Self {
        Self {
            task_type,
            _params: PhantomData,
        }
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
    let terminal = task_type == "configure-genesis" && message.to_ascii_lowercase().contains("mismatch");
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
            TaskStatus::Running => Outcome::Running,
            TaskStatus::Completed => compact_outputs(Outcome::Done(outputs(result.result))),
            TaskStatus::Failed => {
                failed_result(self.task_type, result.error.as_deref(), result.result.as_ref())
            }
        }
    }
}

impl<P> Task for SidecarTask<P>
where
    P: JsonSchema + Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static,
{
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
            let params = serde_json::to_value(params).unwrap_or(Value::Null);
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
            }
            match node
                .submit(&SubmitTask::new(inv.task.key, self.task_type, params))
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
