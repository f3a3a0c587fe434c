//! Fault injection: what can go wrong, for which requests and tasks, how many times.
//!
//! A fault has a selector (a task type, a node, both, or neither = everything) and an action. Faults are
//! installed from flags at startup or through `POST /admin/faults`, and consulted in the order they were added.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};

/// A node: (namespace, name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRef {
    /// The node's namespace.
    pub namespace: String,
    /// The node's name.
    pub name: String,
}

impl NodeRef {
    /// The node `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(ns, name))
            }
            _ => bail!("node {s:?} is not NAMESPACE/NAME"),
        }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which requests and tasks a fault applies to; an empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Only tasks of this type (and requests about them: submit, poll, cancel).
    pub task: Option<String>,
    /// Only this node.
    pub node: Option<NodeRef>,
}

impl Selector {
    /// Parses `TYPE`, `TYPE@NS/NAME`, `@NS/NAME` or `*`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        if s == "*" || s.is_empty() {
            return Ok(Self::default());
        }
        let (task, node) = match s.split_once('@') {
            Some((task, node)) => (task, Some(NodeRef::parse(node)?)),
            None => (s, None),
        };
        let task = (!task.is_empty() && task != "*").then(|| task.to_owned());
        Ok(Self { task, node })
    }

    /// True when a request to `node` about a task of type `task` (if any) is selected.
    pub fn matches(&self, node: &NodeRef, task: Option<&str>) -> bool {
        let task_ok = match (&self.task, task) {
            (None, _) => true,
            (Some(want), Some(got)) => want == got,
            (Some(_), None) => false,
        };
        task_ok && self.node.as_ref().is_none_or(|n| n == node)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.task, &self.node) {
            (None, None) => f.write_str("*"),
            (Some(t), None) => f.write_str(t),
            (None, Some(n)) => write!(f, "@{n}"),
            (Some(t), Some(n)) => write!(f, "{t}@{n}"),
        }
    }
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Delay the HTTP response of every selected sidecar request.
    Latency(Duration),
    /// Selected tasks stay `running` this long (instead of `--task-duration`).
    Duration(Duration),
    /// The next selected task executions end `failed` with this error (and result, e.g. diagnostics).
    Fail {
        /// The task's error message; a default names the fault.
        error: Option<String>,
        /// The task's result on failure; `config-validate` gets diagnostics by default.
        result: Option<serde_json::Value>,
    },
    /// Selected sidecar requests are answered with this HTTP status and `{"error": "injected fault"}`.
    Status(u16),
    /// The next selected tx broadcasts (gov tasks) are included with this non-zero code: on chain, changing
    /// nothing; the task fails with `inclusionStatus: committed_failed`.
    TxCode {
        /// The ABCI code.
        code: u32,
        /// The raw log; a default names the fault.
        log: Option<String>,
    },
    /// The next selected tx broadcasts are accepted but not included while the sidecar waits: the task fails
    /// with `inclusionStatus: pending`, and the chain includes the tx afterwards (its effect happens).
    TxPending,
}

/// An installed fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Sequence number, for listing.
    pub id: u64,
    /// Which requests or tasks.
    pub selector: Selector,
    /// What happens to them.
    pub action: Action,
    /// How many more times it fires; `None` = until cleared.
    pub remaining: Option<u32>,
    /// For `fail`: fires for this share of the selected executions only (0-100; `None` = all), chosen by a
    /// hash of the task id, so a run is reproducible.
    pub percent: Option<u8>,
    /// For `fail`: only first executions of an id (`run` 1), never a re-execution of a re-submitted failed id.
    pub first_run: bool,
}

impl Fault {
    /// Whether this fault applies to execution `run` of task `id` (its `percent` and `firstRun` filters).
    pub fn applies_to(&self, id: uuid::Uuid, run: u32) -> bool {
        if self.first_run && run != 1 {
            return false;
        }
        self.percent.is_none_or(|p| {
            let b = id.as_bytes();
            let h = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) ^ self.id;
            h % 100 < u64::from(p)
        })
    }
}

/// The JSON form of a fault (`POST /admin/faults`, and the listing of `GET /admin/faults`).
///
/// `{"kind": "fail" | "latency" | "duration" | "status" | "tx-code" | "tx-pending", "task"?: TYPE,
///   "node"?: "NS/NAME", "count"?: N, "delay"?: "2s" (latency, duration), "code"?: 503 (status; the ABCI code
///   for tx-code), "error"?: "..." (fail; the raw log for tx-code), "result"?: {...} (fail)}`.
/// `count` defaults to 1 for `fail`, `tx-code` and `tx-pending`, and to unlimited for the others; `percent`
/// and `firstRun` apply to `fail`, `tx-code` and `tx-pending`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// `fail`, `latency`, `duration`, `status`, `tx-code` or `tx-pending`.
    pub kind: String,
    /// Only tasks of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Only this node, `NS/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How many times it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// For `latency` and `duration`: a humantime duration (`250ms`, `2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// For `status`: the HTTP status to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// For `fail`: the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `fail`: the task result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// In listings: the fault's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// For `fail`: the share (0-100) of selected executions that fail, chosen by a hash of the task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// For `fail`: only the first execution of each id fails (a re-submitted failed id then succeeds).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_run: bool,
}

impl FaultSpec {
    /// Checks the spec and turns it into a fault numbered `id`.
    pub fn into_fault(self, id: u64) -> anyhow::Result<Fault> {
        let selector = Selector {
            task: self.task,
            node: self.node.as_deref().map(NodeRef::parse).transpose()?,
        };
        let delay = || -> anyhow::Result<Duration> {
            let text = self
                .delay
                .as_deref()
                .ok_or_else(|| anyhow!("{} needs \"delay\"", self.kind))?;
            humantime::parse_duration(text).with_context(|| format!("delay {text:?}"))
        };
        let (action, default_count) = match self.kind.as_str() {
            "latency" => (Action::Latency(delay()?), None),
            "duration" => (Action::Duration(delay()?), None),
            "fail" => (
                Action::Fail {
                    error: self.error,
                    result: self.result,
                },
                Some(1),
            ),
            "status" => {
                let code = self.code.ok_or_else(|| anyhow!("status needs \"code\""))?;
                if !(100..=599).contains(&code) {
                    bail!("status code {code} is not an HTTP status");
                }
                (Action::Status(code), None)
            }
            "tx-code" => {
                let code = self.code.ok_or_else(|| anyhow!("tx-code needs \"code\""))?;
                if code == 0 {
                    bail!("tx-code 0 is a success, not a fault");
                }
                (
                    Action::TxCode {
                        code: code.into(),
                        log: self.error,
                    },
                    Some(1),
                )
            }
            "tx-pending" => (Action::TxPending, Some(1)),
            other => {
                bail!("unknown fault kind {other:?} (fail, latency, duration, status, tx-code, tx-pending)")
            }
        };
        Ok(Fault {
            id,
            selector,
            action,
            remaining: self.count.or(default_count),
            percent: match self.percent {
                Some(p) if p > 100 => bail!("percent {p} is above 100"),
                p => p,
            },
            first_run: self.first_run,
        })
    }
}

impl Fault {
    /// The JSON form, with the remaining count.
    pub fn to_spec(&self) -> FaultSpec {
        let mut spec = FaultSpec {
            task: self.selector.task.clone(),
            node: self.selector.node.as_ref().map(ToString::to_string),
            count: self.remaining,
            id: Some(self.id),
            percent: self.percent,
            first_run: self.first_run,
            ..FaultSpec::default()
        };
        match &self.action {
            Action::Latency(d) => {
                "latency".clone_into(&mut spec.kind);
                spec.delay = Some(humantime::format_duration(*d).to_string());
            }
            Action::Duration(d) => {
                "duration".clone_into(&mut spec.kind);
                spec.delay = Some(humantime::format_duration(*d).to_string());
            }
            Action::Fail { error, result } => {
                "fail".clone_into(&mut spec.kind);
                spec.error.clone_from(error);
                spec.result.clone_from(result);
            }
            Action::Status(code) => {
                "status".clone_into(&mut spec.kind);
                spec.code = Some(*code);
            }
            Action::TxCode { code, log } => {
                "tx-code".clone_into(&mut spec.kind);
                spec.code = u16::try_from(*code).ok();
                spec.error.clone_from(log);
            }
            Action::TxPending => "tx-pending".clone_into(&mut spec.kind),
        }
        spec
    }
}

/// `--fail SELECTOR[:N]`.
pub fn parse_fail_flag(s: &str) -> anyhow::Result<FaultSpec> {
    let (sel, count) = split_count(s)?;
    let selector = Selector::parse(sel)?;
    Ok(spec_for("fail", &selector, count))
}

/// `--latency SELECTOR=DURATION` and `--duration SELECTOR=DURATION`.
pub fn parse_delay_flag(kind: &str, s: &str) -> anyhow::Result<FaultSpec> {
    let (sel, delay) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("{s:?} is not SELECTOR=DURATION"))?;
    humantime::parse_duration(delay).with_context(|| format!("duration {delay:?}"))?;
    let mut spec = spec_for(kind, &Selector::parse(sel)?, None);
    spec.delay = Some(delay.to_owned());
    Ok(spec)
}

/// `--http-status SELECTOR=CODE[:N]`.
pub fn parse_status_flag(s: &str) -> anyhow::Result<FaultSpec> {
    let (sel, code) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("{s:?} is not SELECTOR=CODE[:N]"))?;
    let (code, count) = split_count(code)?;
    let code: u16 = code.parse().with_context(|| format!("status code {code:?}"))?;
    let mut spec = spec_for("status", &Selector::parse(sel)?, count);
    spec.code = Some(code);
    Ok(spec)
}

fn split_count(s: &str) -> anyhow::Result<(&str, Option<u32>)> {
    match s.rsplit_once(':') {
        Some((head, n)) => Ok((
            head,
            Some(n.parse().with_context(|| format!("count {n:?} in {s:?}"))?),
        )),
        None => Ok((s, None)),
    }
}

fn spec_for(kind: &str, selector: &Selector, count: Option<u32>) -> FaultSpec {
    FaultSpec {
        kind: kind.to_owned(),
        task: selector.task.clone(),
        node: selector.node.as_ref().map(ToString::to_string),
        count,
        ..FaultSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match() {
        let a = NodeRef::new("ns", "a");
        let b = NodeRef::new("ns", "b");
        let any = Selector::parse("*").unwrap();
        assert!(any.matches(&a, None) && any.matches(&b, Some("x")));
        let typed = Selector::parse("config-validate").unwrap();
        assert!(typed.matches(&a, Some("config-validate")));
        assert!(!typed.matches(&a, Some("mark-ready")) && !typed.matches(&a, None));
        let node = Selector::parse("@ns/a").unwrap();
        assert!(node.matches(&a, None) && !node.matches(&b, None));
        let both = Selector::parse("mark-ready@ns/b").unwrap();
        assert!(both.matches(&b, Some("mark-ready")) && !both.matches(&a, Some("mark-ready")));
        assert_eq!(both.to_string(), "mark-ready@ns/b");
        assert!(Selector::parse("x@nonamespace").is_err());
    }

    #[test]
    fn flags_parse_into_faults() {
        let f = parse_fail_flag("config-validate:2")
            .unwrap()
            .into_fault(1)
            .unwrap();
        assert_eq!(f.remaining, Some(2));
        assert_eq!(f.selector.task.as_deref(), Some("config-validate"));
        let once = parse_fail_flag("mark-ready@ns/n").unwrap().into_fault(2).unwrap();
        assert_eq!(once.remaining, Some(1));
        let lat = parse_delay_flag("latency", "snapshot-restore=2s")
            .unwrap()
            .into_fault(3)
            .unwrap();
        assert_eq!(lat.action, Action::Latency(Duration::from_secs(2)));
        assert_eq!(lat.remaining, None);
        let st = parse_status_flag("@ns/n=503:3").unwrap().into_fault(4).unwrap();
        assert_eq!(st.action, Action::Status(503));
        assert_eq!(st.remaining, Some(3));
        assert!(parse_delay_flag("latency", "x=soon").is_err());
        assert!(parse_status_flag("x=999").unwrap().into_fault(5).is_err());
    }

    #[test]
    fn tx_faults_parse_fire_once_by_default_and_round_trip() {
        let spec: FaultSpec = serde_json::from_value(serde_json::json!({
            "kind": "tx-code", "task": "gov-vote", "code": 11, "error": "out of gas", "firstRun": true
        }))
        .unwrap();
        let fault = spec.into_fault(1).unwrap();
        assert_eq!(
            fault.action,
            Action::TxCode {
                code: 11,
                log: Some("out of gas".into())
            }
        );
        assert_eq!(fault.remaining, Some(1));
        assert!(fault.applies_to(uuid::Uuid::nil(), 1) && !fault.applies_to(uuid::Uuid::nil(), 2));
        let back = fault.to_spec();
        assert_eq!((back.kind.as_str(), back.code), ("tx-code", Some(11)));
        let pending: FaultSpec = serde_json::from_value(serde_json::json!({"kind": "tx-pending"})).unwrap();
        assert_eq!(pending.into_fault(2).unwrap().action, Action::TxPending);
        let zero: FaultSpec =
            serde_json::from_value(serde_json::json!({"kind": "tx-code", "code": 0})).unwrap();
        assert!(zero.into_fault(3).is_err(), "code 0 is not a failure");
    }

    #[test]
    fn json_specs_round_trip() {
        let spec: FaultSpec = serde_json::from_value(serde_json::json!({
            "kind": "fail", "task": "config-validate", "node": "ns/n", "count": 2, "error": "bad"
        }))
        .unwrap();
        let fault = spec.into_fault(7).unwrap();
        let back = fault.to_spec();
        assert_eq!(back.kind, "fail");
        assert_eq!(back.node.as_deref(), Some("ns/n"));
        assert_eq!(back.count, Some(2));
        assert_eq!(back.id, Some(7));
        assert!(
            serde_json::from_value::<FaultSpec>(serde_json::json!({"kind": "fail", "bogus": 1})).is_err()
        );
    }
}
