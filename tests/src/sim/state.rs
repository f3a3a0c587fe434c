//! The simulator's in-memory state: virtual sidecars (nodes), their tasks, and the installed faults.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Config;
use super::faults::{Action, Fault, FaultSpec, NodeRef};
use super::genesis::{Bucket, node_id};

/// Every task type the simulator executes (spec 2.9 / 5.4, the ones the operator uses); others get 400.
pub const TASK_TYPES: &[&str] = &[
    "snapshot-restore",
    "configure-genesis",
    "config-apply",
    "config-patch",
    "config-validate",
    "configure-state-sync",
    "mark-ready",
    "mark-not-ready",
    "generate-identity",
    "generate-gentx",
    "upload-genesis-artifacts",
    "assemble-and-upload-genesis",
    "set-genesis-peers",
    "stop-seid",
    "restart-seid",
    "reset-data",
    "await-condition",
    "gov-vote",
    "gov-software-upgrade",
    "gov-param-change",
    "snapshot-upload-once",
    "result-export",
];

/// Time between simulated blocks until `POST /admin/chain` changes it (Sei's is about 400 ms).
pub const DEFAULT_BLOCK_TIME: Duration = Duration::from_millis(400);

/// The chain every virtual node belongs to: a block height that advances with time, the transactions the gov
/// tasks broadcast, and the proposals they created. Heights are computed from the wall clock, so nothing ticks.
#[derive(Debug)]
pub struct Chain {
    anchor_height: u64,
    anchor_at: Instant,
    /// Time between blocks; zero halts the chain.
    pub block_time: Duration,
    /// Every broadcast accepted by the chain, in order (included or still pending): the on-chain submissions
    /// the durability tests count.
    pub txs: Vec<Tx>,
    /// Proposals by id (from 1).
    pub proposals: BTreeMap<u64, Proposal>,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            anchor_height: 1,
            anchor_at: Instant::now(),
            block_time: DEFAULT_BLOCK_TIME,
            txs: Vec::new(),
            proposals: BTreeMap::new(),
        }
    }
}

impl Chain {
    /// The latest block height now.
    pub fn height(&self) -> u64 {
        if self.block_time.is_zero() {
            return self.anchor_height;
        }
        let blocks = self.anchor_at.elapsed().as_nanos() / self.block_time.as_nanos();
        self.anchor_height + u64::try_from(blocks).unwrap_or(u64::MAX / 2)
    }

    /// Sets the height (default: keep the current one) and the block time (default: keep it).
    pub fn set(&mut self, height: Option<u64>, block_time: Option<Duration>) {
        self.anchor_height = height.unwrap_or_else(|| self.height());
        self.anchor_at = Instant::now();
        if let Some(t) = block_time {
            self.block_time = t;
        }
    }

    /// The admin view (`GET /admin/chain`).
    pub fn to_json(&self) -> Value {
        json!({
            "height": self.height(),
            "blockTime": humantime::format_duration(self.block_time).to_string(),
            "txs": self.txs.iter().map(Tx::to_json).collect::<Vec<_>>(),
            "proposals": self.proposals.values().map(Proposal::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A broadcast transaction.
#[derive(Clone, Debug)]
pub struct Tx {
    /// Upper-case hex hash.
    pub hash: String,
    /// The task type that broadcast it.
    pub kind: String,
    /// The node whose sidecar signed it.
    pub node: NodeRef,
    /// The sidecar task id (also in the memo as `taskID=<id>`).
    pub task_id: Uuid,
    /// Which execution of that task id.
    pub run: u32,
    /// The memo as broadcast.
    pub memo: String,
    /// Inclusion height; `None` while pending.
    pub height: Option<u64>,
    /// ABCI code (0 = ok).
    pub code: u32,
    /// The raw log of a failed tx.
    pub raw_log: String,
    /// The proposal it created.
    pub proposal_id: Option<u64>,
}

impl Tx {
    fn to_json(&self) -> Value {
        json!({
            "txHash": self.hash, "type": self.kind, "node": self.node.to_string(), "taskId": self.task_id,
            "run": self.run, "memo": self.memo, "height": self.height, "code": self.code, "rawLog": self.raw_log,
            "proposalId": self.proposal_id,
        })
    }
}

/// A governance proposal.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// Its id.
    pub id: u64,
    /// `software-upgrade` or `param-change`.
    pub kind: String,
    /// Title.
    pub title: String,
    /// The proposal's content (upgrade plan or changes).
    pub content: Value,
    /// The tx that submitted it.
    pub tx_hash: String,
    /// Votes by voter (`NS/NAME` of the voting node) -> option.
    pub votes: BTreeMap<String, String>,
}

impl Proposal {
    fn to_json(&self) -> Value {
        json!({
            "proposalId": self.id, "type": self.kind, "title": self.title, "content": self.content,
            "txHash": self.tx_hash, "votes": self.votes, "status": "voting_period",
        })
    }
}

/// How long a node restarted on a wiped data directory reports `catching_up` (state sync plus block sync).
pub const RESYNC_TIME: Duration = Duration::from_secs(2);

/// seid in the node's pod, as its local RPC `/status` shows it. It starts running, at the chain's height.
#[derive(Clone, Debug, Default)]
pub struct Seid {
    /// Set by `stop-seid` (or `await-condition`'s `SIGTERM_SEID`): the height it stopped at; the RPC does not
    /// answer. `Some(0)` after `reset-data`.
    pub stopped_at: Option<u64>,
    /// While catching up: how many blocks behind the chain the node is.
    pub lag: u64,
    /// The node reports `catching_up` until then (`restart-seid` after `reset-data`, or the admin endpoint).
    pub catching_up_until: Option<Instant>,
    /// Restarts by `restart-seid`.
    pub restarts: u32,
}

impl Seid {
    /// Whether the RPC answers.
    pub fn running(&self) -> bool {
        self.stopped_at.is_none()
    }

    /// `catching_up` of `/status`.
    pub fn catching_up(&self) -> bool {
        self.running() && self.catching_up_until.is_some_and(|t| t > Instant::now())
    }

    /// The node's latest height given the chain's.
    pub fn height(&self, chain: u64) -> u64 {
        match self.stopped_at {
            Some(h) => h,
            None if self.catching_up() => chain.saturating_sub(self.lag),
            None => chain,
        }
    }

    /// The RPC `/status` answer (`None`: seid is not running), as the admin view shows it.
    pub fn to_json(&self, chain: u64) -> Value {
        json!({
            "running": self.running(),
            "height": self.height(chain),
            "catchingUp": self.catching_up(),
            "restarts": self.restarts,
        })
    }
}

/// The state of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Executing.
    Running,
    /// Succeeded.
    Completed,
    /// Failed; a resubmission runs it again.
    Failed,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// A task on a virtual sidecar.
#[derive(Clone, Debug)]
pub struct Task {
    /// The task type.
    pub task_type: String,
    /// Its state.
    pub status: Status,
    /// How many times this id was executed on this sidecar (since the last restart that forgot it).
    pub run: u32,
    /// The params of the first submission.
    pub params: Value,
    /// Output.
    pub result: Option<Value>,
    /// Failure message.
    pub error: Option<String>,
    /// When it was (re)submitted.
    pub submitted_at: SystemTime,
    /// When it finished.
    pub completed_at: Option<SystemTime>,
    /// Submission order, for listings (newest first).
    pub seq: u64,
    /// The last `traceparent` seen on a request about this task.
    pub last_traceparent: Option<String>,
}

impl Task {
    /// The TaskResult JSON of spec 5.2.
    pub fn to_json(&self, id: Uuid) -> Value {
        let mut v = json!({
            "id": id,
            "type": self.task_type,
            "status": self.status.as_str(),
            "run": self.run,
            "submittedAt": rfc3339(self.submitted_at),
        });
        if !self.params.is_null() {
            v["params"] = self.params.clone();
        }
        if let Some(r) = &self.result {
            v["result"] = r.clone();
        }
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        if let Some(t) = self.completed_at {
            v["completedAt"] = json!(rfc3339(t));
        }
        v
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The node key and what `generate-identity` was told.
#[derive(Clone)]
pub struct Identity {
    /// The node key.
    pub key: SigningKey,
    /// The chain from `generate-identity`'s params.
    pub chain_id: Option<String>,
    /// The moniker.
    pub moniker: String,
}

/// One virtual sidecar.
#[derive(Default)]
pub struct Node {
    // The sidecar's own state. A restart loses `ready` and the running tasks; the rest stands for what the real
    // sidecar keeps on the data volume (task store, keys, config).
    /// Set by `mark-ready`, cleared by `mark-not-ready` and restarts.
    pub ready: bool,
    /// Bumped by every restart; a task execution from an older epoch is abandoned.
    pub epoch: u64,
    /// Set by `generate-identity`.
    pub identity: Option<Identity>,
    /// Set by `generate-gentx`: (chain id, gentx).
    pub gentx: Option<(String, Value)>,
    /// Set by `configure-genesis` and `assemble-and-upload-genesis`.
    pub genesis_hash: Option<String>,
    /// Set by `set-genesis-peers`.
    pub peers: Vec<String>,
    /// The last `config-apply` intent (`mode`, `overrides`).
    pub config: Option<Value>,
    /// The `config-patch` files since the last `config-apply`, in order.
    pub config_patches: Vec<Value>,
    /// Every `config-patch` merged (file name to tree), what `restartRequired` compares against.
    pub patched: Value,
    /// seid in the same pod (stopped, restarted, reset by the day-2 tasks).
    pub seid: Seid,
    /// The task store.
    pub tasks: HashMap<Uuid, Task>,
    seq: u64,

    // What tests observe; survives restarts.
    /// Executions per task id, across restarts.
    pub executions: BTreeMap<Uuid, u32>,
    /// Executions per task id that ran to their end (completed or failed; not those a restart abandoned),
    /// across restarts: the effects the task had.
    pub finished: BTreeMap<Uuid, u32>,
    /// The type of every id ever submitted, across restarts.
    pub types: BTreeMap<Uuid, String>,
    /// The last `traceparent` on any request to this sidecar.
    pub last_traceparent: Option<String>,
    /// Requests served.
    pub requests: u64,
    /// Requests refused with 401.
    pub unauthorized: u64,
    /// Restarts through the admin endpoint.
    pub restarts: u32,
}

impl Node {
    /// The next submission sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The node id, once `generate-identity` ran.
    pub fn node_id(&self) -> Option<String> {
        self.identity.as_ref().map(|i| node_id(&i.key.verifying_key()))
    }

    /// Forgets the ready flag and the running tasks, as a restart of the sidecar does.
    pub fn restart(&mut self) {
        self.ready = false;
        self.epoch += 1;
        self.restarts += 1;
        self.tasks.retain(|_, t| t.status != Status::Running);
    }

    /// The admin view (`GET /admin/nodes/{ns}/{name}`; its seid's height: `GET /admin/nodes/{ns}/{name}/seid`).
    pub fn to_json(&self, node: &NodeRef) -> Value {
        let mut tasks: Vec<(&Uuid, &Task)> = self.tasks.iter().collect();
        tasks.sort_by_key(|(_, t)| std::cmp::Reverse(t.seq));
        json!({
            "namespace": node.namespace,
            "name": node.name,
            "ready": self.ready,
            "nodeId": self.node_id(),
            "chainId": self.identity.as_ref().and_then(|i| i.chain_id.clone()),
            "genesisHash": self.genesis_hash,
            "peers": self.peers,
            "config": self.config,
            "configPatches": self.config_patches,
            "lastTraceparent": self.last_traceparent,
            "requests": self.requests,
            "unauthorized": self.unauthorized,
            "restarts": self.restarts,
            "seid": {"running": self.seid.running(), "catchingUp": self.seid.catching_up(), "restarts": self.seid.restarts},
            "executions": self.executions,
            "tasks": tasks.iter().map(|(id, t)| self.admin_task(node, **id, t)).collect::<Vec<_>>(),
        })
    }

    /// One task in the admin views: the TaskResult plus the counters.
    pub fn admin_task(&self, node: &NodeRef, id: Uuid, t: &Task) -> Value {
        let mut v = t.to_json(id);
        v["namespace"] = json!(node.namespace);
        v["name"] = json!(node.name);
        v["executions"] = json!(self.executions.get(&id).copied().unwrap_or(0));
        v["finishedExecutions"] = json!(self.finished.get(&id).copied().unwrap_or(0));
        v["lastTraceparent"] = json!(t.last_traceparent);
        v
    }
}

/// Everything behind the lock.
#[derive(Default)]
pub struct State {
    /// The virtual sidecars, created on first use.
    pub nodes: BTreeMap<NodeRef, Node>,
    /// Installed faults, in order.
    pub faults: Vec<Fault>,
    next_fault: u64,
    /// The chain all nodes share.
    pub chain: Chain,
}

impl State {
    /// The node, created on first use.
    pub fn node(&mut self, node: &NodeRef) -> &mut Node {
        self.nodes.entry(node.clone()).or_default()
    }

    /// The task if it is still the running execution `run` of epoch `epoch`.
    pub fn current(&mut self, node: &NodeRef, id: Uuid, run: u32, epoch: u64) -> Option<&mut Task> {
        let n = self.nodes.get_mut(node)?;
        if n.epoch != epoch {
            return None;
        }
        n.tasks
            .get_mut(&id)
            .filter(|t| t.run == run && t.status == Status::Running)
    }

    /// Installs a fault; returns it as installed.
    pub fn add_fault(&mut self, spec: FaultSpec) -> anyhow::Result<FaultSpec> {
        self.next_fault += 1;
        let fault = spec.into_fault(self.next_fault)?;
        let listed = fault.to_spec();
        self.faults.push(fault);
        Ok(listed)
    }

    /// Fires the faults selected by `pick` for this request or task: every match is counted down, and the
    /// fired actions are returned in order.
    fn fire(&mut self, node: &NodeRef, task: Option<&str>, pick: impl Fn(&Action) -> bool) -> Vec<Action> {
        let mut fired = Vec::new();
        for f in &mut self.faults {
            if pick(&f.action) && f.remaining != Some(0) && f.selector.matches(node, task) {
                if let Some(n) = &mut f.remaining {
                    *n -= 1;
                }
                fired.push(f.action.clone());
            }
        }
        self.faults.retain(|f| f.remaining != Some(0));
        fired
    }

    /// The response delay and forced status of a sidecar request.
    pub fn request_faults(&mut self, node: &NodeRef, task: Option<&str>) -> (Duration, Option<u16>) {
        let delay = self
            .fire(node, task, |a| matches!(a, Action::Latency(_)))
            .into_iter()
            .filter_map(|a| if let Action::Latency(d) = a { Some(d) } else { None })
            .max()
            .unwrap_or_default();
        let status = self
            .first(node, task, |f| matches!(f.action, Action::Status(_)))
            .and_then(|a| match a {
                Action::Status(code) => Some(code),
                _ => None,
            });
        (delay, status)
    }

    /// How long a task of this type stays running (the last matching `duration` fault), if overridden.
    pub fn task_duration(&mut self, node: &NodeRef, task: &str) -> Option<Duration> {
        self.fire(node, Some(task), |a| matches!(a, Action::Duration(_)))
            .into_iter()
            .filter_map(|a| {
                if let Action::Duration(d) = a {
                    Some(d)
                } else {
                    None
                }
            })
            .next_back()
    }

    /// Consumes one `fail` fault for execution `run` of task `id` (type `task`), if one applies.
    pub fn take_failure(&mut self, node: &NodeRef, task: &str, id: Uuid, run: u32) -> Option<Action> {
        self.first(node, Some(task), |f| {
            matches!(f.action, Action::Fail { .. }) && f.applies_to(id, run)
        })
    }

    /// Consumes one `tx-code` or `tx-pending` fault for execution `run` of task `id` (type `task`), if one applies.
    pub fn take_tx_fault(&mut self, node: &NodeRef, task: &str, id: Uuid, run: u32) -> Option<Action> {
        self.first(node, Some(task), |f| {
            matches!(f.action, Action::TxCode { .. } | Action::TxPending) && f.applies_to(id, run)
        })
    }

    /// Fires only the first matching fault selected by `pick`.
    fn first(&mut self, node: &NodeRef, task: Option<&str>, pick: impl Fn(&Fault) -> bool) -> Option<Action> {
        let i = self
            .faults
            .iter()
            .position(|f| pick(f) && f.remaining != Some(0) && f.selector.matches(node, task))?;
        let f = &mut self.faults[i];
        let action = f.action.clone();
        if let Some(n) = &mut f.remaining {
            *n -= 1;
            if *n == 0 {
                self.faults.remove(i);
            }
        }
        Some(action)
    }
}

/// The simulator: configuration, the bucket, and the state behind one lock (never held across an await).
pub struct Sim {
    /// As started.
    pub config: Config,
    /// The directory standing in for the genesis bucket.
    pub bucket: Bucket,
    state: Mutex<State>,
}

impl Sim {
    /// A simulator with the faults of `config` installed; creates the bucket directory.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.bucket_dir)
            .map_err(|e| anyhow::anyhow!("creating bucket dir {}: {e}", config.bucket_dir.display()))?;
        let mut state = State::default();
        for spec in config.faults.clone() {
            state.add_fault(spec)?;
        }
        Ok(Self {
            bucket: Bucket::new(config.bucket_dir.clone()),
            config,
            state: Mutex::new(state),
        })
    }

    /// Runs `f` on the state under the lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler cannot leave the maps half-updated in a way worth refusing service for.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
