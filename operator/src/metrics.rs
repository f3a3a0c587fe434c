//! Operator metrics in the OpenMetrics text format (served on `/metrics`), through `prometheus-client`: plan and
//! task duration histograms with the plan's trace id as exemplar, attempt and retry counters, the active plans
//! gauge, a journal size histogram, status writes, API requests by verb and reconcile errors by class.
//!
//! Metric names and labels are referenced by tests, `hack/bench-nodes.sh`, dashboards and alerts: keep them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sei_engine::Plan;

/// Bucket bounds of the duration histograms, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Bucket bounds of the journal size histogram, in bytes.
const SIZE_BUCKETS: &[f64] = &[1024.0, 4096.0, 16384.0, 65536.0, 262_144.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabels {
    workflow: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    workflow: String,
    task_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskOutcomeLabels {
    workflow: String,
    task_type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

/// The exemplar of a duration observation: the plan's trace id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabels {
    trace_id: String,
}

type DurationHistogram = HistogramWithExemplars<TraceLabels>;

fn duration_histogram() -> DurationHistogram {
    HistogramWithExemplars::new(DURATION_BUCKETS.iter().copied())
}

/// Every metric of the operator, registered once; handles are cheap clones of the registered metrics.
pub struct Metrics {
    registry: Registry,
    plans_created: Family<WorkflowLabels, Counter>,
    plan_seconds: Family<PlanLabels, DurationHistogram, fn() -> DurationHistogram>,
    task_seconds: Family<TaskOutcomeLabels, DurationHistogram, fn() -> DurationHistogram>,
    task_starts: Family<TaskLabels, Counter>,
    task_retries: Family<TaskLabels, Counter>,
    active_plans: Family<WorkflowLabels, Gauge>,
    /// Object uid -> workflow of its active plan: the gauge counts them, and a `set_active` repeated for the
    /// same object must not count it twice.
    active: Mutex<BTreeMap<String, String>>,
    journal_bytes: Histogram,
    status_writes: Family<KindLabels, Counter>,
    api_requests: Family<VerbLabels, Counter>,
    reconcile_errors: Family<ClassLabels, Counter>,
    conflicts: Family<KindLabels, Counter>,
    fenced: Counter,
    reconciles: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            plans_created: Family::default(),
            plan_seconds: Family::new_with_constructor(duration_histogram),
            task_seconds: Family::new_with_constructor(duration_histogram),
            task_starts: Family::default(),
            task_retries: Family::default(),
            active_plans: Family::default(),
            active: Mutex::default(),
            journal_bytes: Histogram::new(SIZE_BUCKETS.iter().copied()),
            status_writes: Family::default(),
            api_requests: Family::default(),
            reconcile_errors: Family::default(),
            conflicts: Family::default(),
            fenced: Counter::default(),
            reconciles: Family::default(),
        };
        let mut registry = Registry::default();
        registry.register(
            "sei_plans_created",
            "Plans created, by workflow",
            m.plans_created.clone(),
        );
        registry.register(
            "sei_plan_duration_seconds",
            "Duration of finished plans, by workflow and phase",
            m.plan_seconds.clone(),
        );
        registry.register(
            "sei_task_duration_seconds",
            "Duration of task attempts, by workflow, task type and outcome",
            m.task_seconds.clone(),
        );
        registry.register(
            "sei_task_attempts",
            "Task attempts started",
            m.task_starts.clone(),
        );
        registry.register(
            "sei_task_retries",
            "Task attempts after the first",
            m.task_retries.clone(),
        );
        registry.register(
            "sei_active_plans",
            "Objects with an active plan, by workflow",
            m.active_plans.clone(),
        );
        registry.register(
            "sei_journal_bytes",
            "Size of written plan journals (compact JSON)",
            m.journal_bytes.clone(),
        );
        registry.register(
            "sei_status_writes",
            "Status writes sent, by kind",
            m.status_writes.clone(),
        );
        registry.register(
            "sei_kube_requests",
            "Requests sent to the API server, by verb",
            m.api_requests.clone(),
        );
        registry.register(
            "sei_reconcile_errors",
            "Failed reconciles, by class",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "sei_reconcile_conflicts",
            "Reconciles that lost an optimistic-concurrency race (HTTP 409) and were retried at once, by kind",
            m.conflicts.clone(),
        );
        registry.register(
            "sei_reconciles",
            "Reconciles started, by kind",
            m.reconciles.clone(),
        );
        registry.register(
            "sei_fenced_writes",
            "Writes and task effects refused because the leader lease was not renewed within the renew deadline",
            m.fenced.clone(),
        );
        Self { registry, ..m }
    }
}

#[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

fn trace_of(plan: &Plan) -> TraceLabels {
    TraceLabels {
        trace_id: plan.id.simple().to_string(),
    }
}

impl Metrics {
    /// A plan of `workflow` was created.
    pub fn plan_created(&self, workflow: &str) {
        self.plans_created
            .get_or_create(&WorkflowLabels {
                workflow: workflow.to_owned(),
            })
            .inc();
    }

    /// A plan finished.
    pub fn plan_finished(&self, plan: &Plan) {
        let labels = PlanLabels {
            workflow: plan.workflow.clone(),
            phase: format!("{:?}", plan.phase),
        };
        let secs = plan
            .finished_at
            .map_or(0.0, |f| seconds(f.unix_millis() - plan.started_at.unix_millis()));
        self.plan_seconds
            .get_or_create(&labels)
            .observe(secs, Some(trace_of(plan)), None);
    }

    /// A task attempt of `plan` ended after `duration_ms` with `outcome` (`succeeded`, `failed`, `cancelled`).
    pub fn task_finished(&self, plan: &Plan, task_type: &str, outcome: &str, duration_ms: i64) {
        let labels = TaskOutcomeLabels {
            workflow: plan.workflow.clone(),
            task_type: task_type.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.task_seconds
            .get_or_create(&labels)
            .observe(seconds(duration_ms), Some(trace_of(plan)), None);
    }

    /// Attempt `attempt` of a task of type `task_type` started (counted once its journal was persisted).
    pub fn task_started(&self, workflow: &str, task_type: &str, attempt: u32) {
        let labels = TaskLabels {
            workflow: workflow.to_owned(),
            task_type: task_type.to_owned(),
        };
        self.task_starts.get_or_create(&labels).inc();
        if attempt > 1 {
            self.task_retries.get_or_create(&labels).inc();
        }
    }

    /// The object `uid` now has an active plan of `workflow` (`None`: no active plan).
    pub fn set_active(&self, uid: &str, workflow: Option<&str>) {
        let Ok(mut active) = self.active.lock() else {
            return;
        };
        let before = match workflow {
            Some(w) => active.insert(uid.to_owned(), w.to_owned()),
            None => active.remove(uid),
        };
        if before.as_deref() == workflow {
            return;
        }
        if let Some(w) = before {
            let labels = WorkflowLabels { workflow: w };
            // A workflow without active plans leaves the exposition, as no series is better than a stale zero.
            if self.active_plans.get_or_create(&labels).dec() <= 1 {
                self.active_plans.remove(&labels);
            }
        }
        if let Some(w) = workflow {
            let labels = WorkflowLabels {
                workflow: w.to_owned(),
            };
            self.active_plans.get_or_create(&labels).inc();
        }
    }

    /// A journal of `bytes` (compact JSON) was written.
    pub fn journal_written(&self, bytes: usize) {
        #[allow(clippy::cast_precision_loss)] // journals are far below 2^52 bytes
        self.journal_bytes.observe(bytes as f64);
    }

    /// A status write was sent.
    pub fn status_write(&self, kind: &str) {
        self.status_writes
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A request to the API server was sent (counted by a client layer).
    pub fn api_request(&self, verb: &'static str) {
        self.api_requests.get_or_create(&VerbLabels { verb }).inc();
    }

    /// A reconcile of a `kind` object failed; conflicts (lost optimistic-concurrency races, retried at
    /// once) are also counted on their own.
    pub fn reconcile_error(&self, kind: &str, category: &str) {
        self.reconcile_errors
            .get_or_create(&ClassLabels {
                class: category.to_owned(),
            })
            .inc();
        if category == "conflict" {
            self.conflicts
                .get_or_create(&KindLabels {
                    kind: kind.to_owned(),
                })
                .inc();
        }
    }

    /// A reconcile of a `kind` object started.
    pub fn reconciled(&self, kind: &str) {
        self.reconciles
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A write to the API server or a task effect was refused because the leader lease is not held.
    pub fn fenced(&self) {
        self.fenced.inc();
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            return "# EOF\n".into();
        }
        out
    }
}

/// Every metric family the operator registers, with its type: what dashboards and alerts may name (a family
/// without samples yet, such as `sei_reconcile_errors` before the first error, is absent from `/metrics`;
/// the test below keeps this list equal to the registry).
pub const FAMILIES: &[(&str, &str)] = &[
    ("sei_plans_created", "counter"),
    ("sei_plan_duration_seconds", "histogram"),
    ("sei_task_duration_seconds", "histogram"),
    ("sei_task_attempts", "counter"),
    ("sei_task_retries", "counter"),
    ("sei_active_plans", "gauge"),
    ("sei_journal_bytes", "histogram"),
    ("sei_status_writes", "counter"),
    ("sei_kube_requests", "counter"),
    ("sei_reconcile_errors", "counter"),
    ("sei_reconcile_conflicts", "counter"),
    ("sei_fenced_writes", "counter"),
    ("sei_reconciles", "counter"),
];

/// The Kubernetes verb of a request: method, plus `watch`/`list`/`get` told apart by the query.
#[must_use]
pub fn verb<B>(req: &http::Request<B>) -> &'static str {
    let query = req.uri().query().unwrap_or_default();
    match *req.method() {
        http::Method::GET if query.contains("watch=true") || query.contains("watch=1") => "watch",
        http::Method::GET
            if query.contains("labelSelector")
                || query.contains("limit=")
                || query.contains("fieldSelector") =>
        {
            "list"
        }
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(workflow: &str) -> Plan {
        serde_json::from_value(serde_json::json!({
            "schemaVersion": sei_engine::SCHEMA_VERSION,
            "id": "00000000-0000-0000-0000-0000000000ab",
            "workflow": workflow,
            "phase": "Succeeded",
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:00:03Z",
            "tasks": [],
        }))
        .unwrap()
    }

    #[test]
    fn histograms_are_cumulative_and_carry_the_trace_id_exemplar() {
        let m = Metrics::default();
        let p = plan("w");
        m.task_finished(&p, "t", "succeeded", 30);
        m.task_finished(&p, "t", "succeeded", 3000);
        m.plan_finished(&p);
        let text = m.render();
        let trace = "000000000000000000000000000000ab";
        let labels = "workflow=\"w\",task_type=\"t\",outcome=\"succeeded\"";
        assert!(
            text.contains(&format!(
                "sei_task_duration_seconds_bucket{{le=\"0.05\",{labels}}} 1 # {{trace_id=\"{trace}\"}} 0.03\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "sei_task_duration_seconds_bucket{{le=\"2.5\",{labels}}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("sei_task_duration_seconds_count{{{labels}}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains("sei_plan_duration_seconds_count{workflow=\"w\",phase=\"Succeeded\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_exposition_ends_with_eof_and_counts_active_plans() {
        let m = Metrics::default();
        m.set_active("u1", Some("node-init"));
        m.set_active("u2", Some("node-init"));
        m.set_active("u2", Some("node-init"));
        m.set_active("u3", Some("node-update"));
        m.set_active("u2", None);
        m.set_active("u3", None);
        m.reconcile_error("SeiNode", "conflict");
        m.api_request("patch");
        m.task_started("w", "t", 2);
        let text = m.render();
        assert!(text.ends_with("# EOF\n"));
        assert!(
            text.contains("sei_active_plans{workflow=\"node-init\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("sei_active_plans{workflow=\"node-update\"}"),
            "{text}"
        );
        for line in [
            "sei_reconcile_errors_total{class=\"conflict\"} 1\n",
            "sei_reconcile_conflicts_total{kind=\"SeiNode\"} 1\n",
            "sei_kube_requests_total{verb=\"patch\"} 1\n",
            "sei_task_attempts_total{workflow=\"w\",task_type=\"t\"} 1\n",
            "sei_task_retries_total{workflow=\"w\",task_type=\"t\"} 1\n",
            "sei_fenced_writes_total 0\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }

    #[test]
    fn families_lists_every_registered_family() {
        let m = Metrics::default();
        let plan = sei_engine::compile(
            &sei_engine::WorkflowDefinition::from_yaml("w.yaml", "name: w\ntasks: [{name: a, type: t}]")
                .unwrap(),
            &sei_engine::Inputs::new(uuid::Uuid::nil(), sei_engine::Timestamp::from_unix_millis(0)),
            &sei_engine::Registry::new().with_any_params("t"),
        )
        .unwrap();
        m.plan_created("w");
        m.plan_finished(&plan);
        m.task_finished(&plan, "t", "Succeeded", 5);
        m.task_started("w", "t", 2);
        m.set_active("u", Some("w"));
        m.journal_written(10);
        m.status_write("SeiNode");
        m.api_request("get");
        m.reconcile_error("SeiNode", "conflict");
        m.fenced();
        m.reconciled("SeiNode");
        let text = m.render();
        let mut declared: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_owned(), t.to_owned()))
            .collect();
        declared.sort();
        let mut listed: Vec<(String, String)> = FAMILIES
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        listed.sort();
        assert_eq!(declared, listed, "{text}");
    }
}
