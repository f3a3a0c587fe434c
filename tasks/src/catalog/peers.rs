//! `record-peers`: records the peer list a workflow wrote into the node's config in the `PeersConfigured`
//! condition (message `persistent_peers = <list>`, what the `node-peers` trigger compares
//! `status.resolvedPeers` against). Kubernetes-side and idempotent: the same condition twice is the same status.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use sei_crds::conditions;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::task::{Context, Invocation, Outcome, Task, schema_of};

/// Params of `record-peers`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordPeersParams {
    /// The peers written into the config (`<nodeId>@<host>:<port>`), as the plan snapshotted them.
    #[serde(default)]
    pub peers: Vec<String>,
}

/// `record-peers` (see the module docs).
pub struct RecordPeers;

fn record(inv: &Invocation) -> Outcome {
    let params: RecordPeersParams = match inv.params() {
        Ok(p) => p,
        Err(o) => return o,
    };
    let mut peers = params.peers;
    peers.sort();
    peers.dedup();
    let count = peers.len();
    let generation = inv
        .owner_object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    inv.status.set_condition(conditions::new_condition(
        conditions::PEERS_CONFIGURED,
        conditions::ConditionStatus::True,
        conditions::reasons::PEERS_WRITTEN,
        format!("{}{}", conditions::PEERS_MESSAGE_PREFIX, peers.join(",")),
        generation,
        // The controller stamps the time when it applies the condition.
        conditions::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    ));
    Outcome::Done(Map::from_iter([("peerCount".to_owned(), json!(count))]))
}

impl Task for RecordPeers {
    fn task_type(&self) -> &'static str {
        "record-peers"
    }
    fn params_schema(&self) -> Value {
        schema_of::<RecordPeersParams>()
    }
    fn start<'a>(&'a self, _cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { record(inv) })
    }
    fn poll<'a>(&'a self, _cx: &'a Context, inv: &'a Invocation) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { record(inv) })
    }
}

/// Registers `record-peers`.
pub(crate) fn register(r: crate::task::Registry) -> crate::task::Registry {
    r.with(RecordPeers)
}
