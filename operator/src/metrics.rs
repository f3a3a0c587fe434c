//! Operator metrics in the Prometheus text format (served on `/metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use sei_engine::{Plan, TaskRef};

/// Counters and gauges, keyed by their label values.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    plans_created: BTreeMap<String, u64>,
    plans_finished: BTreeMap<(String, String), u64>,
    plan_seconds: BTreeMap<(String, String), (f64, u64)>,
    task_starts: BTreeMap<(String, String), u64>,
    task_retries: BTreeMap<(String, String), u64>,
    status_writes: BTreeMap<String, u64>,
    api_requests: BTreeMap<&'static str, u64>,
    reconcile_errors: BTreeMap<String, u64>,
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
        let secs = plan.finished_at.map_or(0.0, |f| {
            #[allow(clippy::cast_precision_loss)] // durations far below 2^52 ms
            let ms = f.duration_since(plan.started_at).as_millis() as f64;
            ms / 1000.0
        });
        self.with(|m| {
            *m.plans_finished.entry(key.clone()).or_default() += 1;
            let e = m.plan_seconds.entry(key).or_default();
            e.0 += secs;
            e.1 += 1;
        });
    }

    /// Task attempts were started.
    pub fn tasks_started(&self, workflow: &str, started: &[TaskRef]) {
        self.with(|m| {
            for t in started {
                let key = (workflow.to_owned(), t.task_type.clone());
                *m.task_starts.entry(key.clone()).or_default() += 1;
                if t.attempt > 1 {
                    *m.task_retries.entry(key).or_default() += 1;
                }
            }
        });
    }

    /// A status write was sent.
    pub fn status_write(&self, kind: &str) {
        self.with(|m| *m.status_writes.entry(kind.to_owned()).or_default() += 1);
    }

    /// A request to the API server was sent (counted by a client layer).
    pub fn api_request(&self, verb: &'static str) {
        self.with(|m| *m.api_requests.entry(verb).or_default() += 1);
    }

    /// A reconcile failed.
    pub fn reconcile_error(&self, category: &str) {
        self.with(|m| *m.reconcile_errors.entry(category.to_owned()).or_default() += 1);
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let Ok(m) = self.inner.lock() else {
            return String::new();
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP sei_plans_created_total Plans created, by workflow.\n# TYPE sei_plans_created_total counter"
        );
        for (w, n) in &m.plans_created {
            let _ = writeln!(out, "sei_plans_created_total{{workflow=\"{w}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP sei_plans_finished_total Plans finished, by workflow and phase.\n# TYPE sei_plans_finished_total counter"
        );
        for ((w, p), n) in &m.plans_finished {
            let _ = writeln!(
                out,
                "sei_plans_finished_total{{workflow=\"{w}\",phase=\"{p}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sei_plan_duration_seconds Duration of finished plans.\n# TYPE sei_plan_duration_seconds summary"
        );
        for ((w, p), (sum, count)) in &m.plan_seconds {
            let _ = writeln!(
                out,
                "sei_plan_duration_seconds_sum{{workflow=\"{w}\",phase=\"{p}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "sei_plan_duration_seconds_count{{workflow=\"{w}\",phase=\"{p}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sei_task_attempts_total Task attempts started.\n# TYPE sei_task_attempts_total counter"
        );
        for ((w, t), n) in &m.task_starts {
            let _ = writeln!(
                out,
                "sei_task_attempts_total{{workflow=\"{w}\",task_type=\"{t}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sei_task_retries_total Task attempts after the first.\n# TYPE sei_task_retries_total counter"
        );
        for ((w, t), n) in &m.task_retries {
            let _ = writeln!(
                out,
                "sei_task_retries_total{{workflow=\"{w}\",task_type=\"{t}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sei_status_writes_total Status writes sent.\n# TYPE sei_status_writes_total counter"
        );
        for (k, n) in &m.status_writes {
            let _ = writeln!(out, "sei_status_writes_total{{kind=\"{k}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP sei_reconcile_errors_total Failed reconciles, by class.\n# TYPE sei_reconcile_errors_total counter"
        );
        for (c, n) in &m.reconcile_errors {
            let _ = writeln!(out, "sei_reconcile_errors_total{{class=\"{c}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP sei_kube_requests_total Requests sent to the API server, by verb.\n# TYPE sei_kube_requests_total counter"
        );
        for (v, n) in &m.api_requests {
            let _ = writeln!(out, "sei_kube_requests_total{{verb=\"{v}\"}} {n}");
        }
        out
    }
}

/// The Kubernetes verb of a request: method, plus `watch`/`list`/`get` told apart by the query and path.
#[must_use]
pub fn verb<B>(req: &http::Request<B>) -> &'static str {
    let query = req.uri().query().unwrap_or_default();
    match *req.method() {
        http::Method::GET if query.contains("watch=true") || query.contains("watch=1") => "watch",
        http::Method::GET => {
            // A collection path ends with the plural resource name; an object path has a name after it.
            // Heuristic: list calls carry a query (limit, labelSelector, resourceVersion) or end in a plural.
            if query.contains("labelSelector") || query.contains("limit=") || query.contains("fieldSelector")
            {
                "list"
            } else {
                "get"
            }
        }
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}
