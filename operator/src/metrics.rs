//! Operator metrics in the OpenMetrics text format (served on `/metrics`): plan and task duration
//! histograms with the plan's trace id as exemplar, attempt and retry counters, the active plans gauge, a
//! journal size histogram, status writes, API requests by verb and reconcile errors by class.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use sei_engine::Plan;

/// Bucket bounds of the duration histograms, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Bucket bounds of the journal size histogram, in bytes.
const SIZE_BUCKETS: &[f64] = &[1024.0, 4096.0, 16384.0, 65536.0, 262_144.0];

/// A histogram with the last exemplar of each bucket.
#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    exemplars: Vec<Option<(String, f64)>>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64, exemplar: Option<&str>) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1];
            self.exemplars = vec![None; bounds.len() + 1];
        }
        let i = bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        if let Some(trace) = exemplar {
            self.exemplars[i] = Some((trace.to_owned(), value));
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| format!("{b}"));
            let _ = write!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
            if let Some(Some((trace, value))) = self.exemplars.get(i) {
                let _ = write!(out, " # {{trace_id=\"{trace}\"}} {value}");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Counters, gauges and histograms, keyed by their label values.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    plans_created: BTreeMap<String, u64>,
    plan_seconds: BTreeMap<(String, String), Histogram>,
    task_seconds: BTreeMap<(String, String, String), Histogram>,
    task_starts: BTreeMap<(String, String), u64>,
    task_retries: BTreeMap<(String, String), u64>,
    active: BTreeMap<String, String>,
    journal_bytes: Histogram,
    status_writes: BTreeMap<String, u64>,
    api_requests: BTreeMap<&'static str, u64>,
    reconcile_errors: BTreeMap<String, u64>,
    conflicts: BTreeMap<String, u64>,
    fenced: u64,
}

#[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

fn trace_of(plan: &Plan) -> String {
    plan.id.simple().to_string()
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut inner) = self.inner.lock() {
            f(&mut inner);
        }
    }

    /// A plan of `workflow` was created.
    pub fn plan_created(&self, workflow: &str) {
        self.with(|m| *m.plans_created.entry(workflow.to_owned()).or_default() += 1);
    }

    /// A plan finished.
    pub fn plan_finished(&self, plan: &Plan) {
        let key = (plan.workflow.clone(), format!("{:?}", plan.phase));
        let secs = plan
            .finished_at
            .map_or(0.0, |f| seconds(f.unix_millis() - plan.started_at.unix_millis()));
        let trace = trace_of(plan);
        self.with(|m| {
            m.plan_seconds
                .entry(key)
                .or_default()
                .observe(DURATION_BUCKETS, secs, Some(&trace));
        });
    }

    /// A task attempt of `plan` ended after `duration_ms` with `outcome` (`succeeded`, `failed`, `cancelled`).
    pub fn task_finished(&self, plan: &Plan, task_type: &str, outcome: &str, duration_ms: i64) {
        let key = (plan.workflow.clone(), task_type.to_owned(), outcome.to_owned());
        let trace = trace_of(plan);
        self.with(|m| {
            m.task_seconds.entry(key).or_default().observe(
                DURATION_BUCKETS,
                seconds(duration_ms),
                Some(&trace),
            );
        });
    }

    /// Attempt `attempt` of a task of type `task_type` started (counted once its journal was persisted).
    pub fn task_started(&self, workflow: &str, task_type: &str, attempt: u32) {
        self.with(|m| {
            let key = (workflow.to_owned(), task_type.to_owned());
            *m.task_starts.entry(key.clone()).or_default() += 1;
            if attempt > 1 {
                *m.task_retries.entry(key).or_default() += 1;
            }
        });
    }

    /// The object `uid` now has an active plan of `workflow` (`None`: no active plan).
    pub fn set_active(&self, uid: &str, workflow: Option<&str>) {
        self.with(|m| match workflow {
            Some(w) => {
                m.active.insert(uid.to_owned(), w.to_owned());
            }
            None => {
                m.active.remove(uid);
            }
        });
    }

    /// A journal of `bytes` (compact JSON) was written.
    pub fn journal_written(&self, bytes: usize) {
        #[allow(clippy::cast_precision_loss)] // journals are far below 2^52 bytes
        let b = bytes as f64;
        self.with(|m| m.journal_bytes.observe(SIZE_BUCKETS, b, None));
    }

    /// A status write was sent.
    pub fn status_write(&self, kind: &str) {
        self.with(|m| *m.status_writes.entry(kind.to_owned()).or_default() += 1);
    }

    /// A request to the API server was sent (counted by a client layer).
    pub fn api_request(&self, verb: &'static str) {
        self.with(|m| *m.api_requests.entry(verb).or_default() += 1);
    }

    /// A reconcile of a `kind` object failed; conflicts (lost optimistic-concurrency races, retried at
    /// once) are also counted on their own.
    pub fn reconcile_error(&self, kind: &str, category: &str) {
        self.with(|m| {
            *m.reconcile_errors.entry(category.to_owned()).or_default() += 1;
            if category == "conflict" {
                *m.conflicts.entry(kind.to_owned()).or_default() += 1;
            }
        });
    }

    /// A write to the API server or a task effect was refused because the leader lease is not held.
    pub fn fenced(&self) {
        self.with(|m| m.fenced += 1);
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    #[must_use]
    #[allow(clippy::too_many_lines)] // one family after another
    pub fn render(&self) -> String {
        let Ok(m) = self.inner.lock() else {
            return "# EOF\n".into();
        };
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# TYPE {name} {kind}\n# HELP {name} {help}");
        };
        family(
            &mut out,
            "sei_plans_created",
            "counter",
            "Plans created, by workflow.",
        );
        for (w, n) in &m.plans_created {
            let _ = writeln!(out, "sei_plans_created_total{{workflow=\"{w}\"}} {n}");
        }
        family(
            &mut out,
            "sei_plan_duration_seconds",
            "histogram",
            "Duration of finished plans, by workflow and phase.",
        );
        for ((w, p), h) in &m.plan_seconds {
            h.render(
                &mut out,
                "sei_plan_duration_seconds",
                &format!("workflow=\"{w}\",phase=\"{p}\""),
                DURATION_BUCKETS,
            );
        }
        family(
            &mut out,
            "sei_task_duration_seconds",
            "histogram",
            "Duration of task attempts, by workflow, task type and outcome.",
        );
        for ((w, t, o), h) in &m.task_seconds {
            let labels = format!("workflow=\"{w}\",task_type=\"{t}\",outcome=\"{o}\"");
            h.render(&mut out, "sei_task_duration_seconds", &labels, DURATION_BUCKETS);
        }
        family(&mut out, "sei_task_attempts", "counter", "Task attempts started.");
        for ((w, t), n) in &m.task_starts {
            let _ = writeln!(
                out,
                "sei_task_attempts_total{{workflow=\"{w}\",task_type=\"{t}\"}} {n}"
            );
        }
        family(
            &mut out,
            "sei_task_retries",
            "counter",
            "Task attempts after the first.",
        );
        for ((w, t), n) in &m.task_retries {
            let _ = writeln!(
                out,
                "sei_task_retries_total{{workflow=\"{w}\",task_type=\"{t}\"}} {n}"
            );
        }
        family(
            &mut out,
            "sei_active_plans",
            "gauge",
            "Objects with an active plan, by workflow.",
        );
        let mut active: BTreeMap<&str, u64> = BTreeMap::new();
        for w in m.active.values() {
            *active.entry(w).or_default() += 1;
        }
        for (w, n) in active {
            let _ = writeln!(out, "sei_active_plans{{workflow=\"{w}\"}} {n}");
        }
        family(
            &mut out,
            "sei_journal_bytes",
            "histogram",
            "Size of written plan journals (compact JSON).",
        );
        if m.journal_bytes.count > 0 {
            m.journal_bytes
                .render(&mut out, "sei_journal_bytes", "", SIZE_BUCKETS);
        }
        family(
            &mut out,
            "sei_status_writes",
            "counter",
            "Status writes sent, by kind.",
        );
        for (k, n) in &m.status_writes {
            let _ = writeln!(out, "sei_status_writes_total{{kind=\"{k}\"}} {n}");
        }
        family(
            &mut out,
            "sei_kube_requests",
            "counter",
            "Requests sent to the API server, by verb.",
        );
        for (v, n) in &m.api_requests {
            let _ = writeln!(out, "sei_kube_requests_total{{verb=\"{v}\"}} {n}");
        }
        family(
            &mut out,
            "sei_reconcile_errors",
            "counter",
            "Failed reconciles, by class.",
        );
        for (c, n) in &m.reconcile_errors {
            let _ = writeln!(out, "sei_reconcile_errors_total{{class=\"{c}\"}} {n}");
        }
        family(
            &mut out,
            "sei_reconcile_conflicts",
            "counter",
            "Reconciles that lost an optimistic-concurrency race (HTTP 409) and were retried at once, by kind.",
        );
        for (k, n) in &m.conflicts {
            let _ = writeln!(out, "sei_reconcile_conflicts_total{{kind=\"{k}\"}} {n}");
        }
        family(
            &mut out,
            "sei_fenced_writes",
            "counter",
            "Writes and task effects refused because the leader lease was not renewed within the renew deadline.",
        );
        let _ = writeln!(out, "sei_fenced_writes_total {}", m.fenced);
        out.push_str("# EOF\n");
        out
    }
}

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

    #[test]
    fn histograms_are_cumulative_and_carry_the_trace_id_exemplar() {
        let mut h = Histogram::default();
        h.observe(&[1.0, 5.0], 0.5, Some("abc"));
        h.observe(&[1.0, 5.0], 3.0, None);
        h.observe(&[1.0, 5.0], 9.0, Some("def"));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "w=\"a\"", &[1.0, 5.0]);
        assert!(
            out.contains("x_seconds_bucket{w=\"a\",le=\"1\"} 1 # {trace_id=\"abc\"} 0.5\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_bucket{w=\"a\",le=\"5\"} 2\n"), "{out}");
        assert!(
            out.contains("x_seconds_bucket{w=\"a\",le=\"+Inf\"} 3 # {trace_id=\"def\"} 9\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{w=\"a\"} 3\n"), "{out}");
    }

    #[test]
    fn the_exposition_ends_with_eof_and_counts_active_plans() {
        let m = Metrics::default();
        m.set_active("u1", Some("node-init"));
        m.set_active("u2", Some("node-init"));
        m.set_active("u2", None);
        m.reconcile_error("SeiNode", "conflict");
        let text = m.render();
        assert!(text.ends_with("# EOF\n"));
        assert!(
            text.contains("sei_active_plans{workflow=\"node-init\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("sei_reconcile_errors_total{class=\"conflict\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("sei_reconcile_conflicts_total{kind=\"SeiNode\"} 1\n"),
            "{text}"
        );
    }
}
