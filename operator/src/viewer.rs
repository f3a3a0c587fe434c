//! The plan viewer: pure renderings of a plan journal and its history, for `sei-operator plan show|graph`
//! (also usable as the kubectl plugin `kubectl sei plan ...`).

use std::fmt::Write as _;

use sei_engine::{Plan, PlanSummary, PlannedTask, TaskRun, TaskState, Timestamp};

fn seconds(from: Timestamp, to: Timestamp) -> String {
    #[allow(clippy::cast_precision_loss)] // durations far below 2^52 ms
    let s = to.duration_since(from).as_millis() as f64 / 1000.0;
    format!("{s:.2}s")
}

fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Pending => "Pending",
        TaskState::Running => "Running",
        TaskState::Succeeded => "Succeeded",
        TaskState::Failed => "Failed",
        TaskState::Skipped => "Skipped",
        TaskState::Cancelled => "Cancelled",
    }
}

fn run_line(task: &PlannedTask, run: &TaskRun) -> String {
    let name = match &run.item {
        Some(item) => format!("{}[{item}]", task.name),
        None => task.name.clone(),
    };
    let mut line = format!("{name:<28} {:<28} {:<10}", task.task_type, state_name(run.state));
    if run.attempt > 0 {
        let _ = write!(line, " attempt {}", run.attempt);
    }
    if let (Some(start), Some(end)) = (run.started_at, run.finished_at) {
        let _ = write!(line, "  {}", seconds(start, end));
    }
    if let Some(target) = task.target.as_deref().filter(|t| !t.is_empty()) {
        let _ = write!(line, "  -> {target}");
    }
    if let Some(at) = run.next_attempt_at {
        let _ = write!(line, "  retry at {at}");
    }
    if let Some(e) = &run.error {
        let _ = write!(line, "\n{:>6}error ({}): {}", "", e.class.as_str(), e.message);
    }
    if let Some(reason) = &run.reason {
        let _ = write!(line, "\n{:>6}{reason}", "");
    }
    line
}

/// The plan as a tree: a header line, then every run (normal tasks, then `finally`), with state, attempt,
/// duration, target, retry time, error and skip/cancel reason.
#[must_use]
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let took = plan
        .finished_at
        .map(|f| format!("  took {}", seconds(plan.started_at, f)))
        .unwrap_or_default();
    let version = if plan.version.is_empty() {
        String::new()
    } else {
        format!(" v{}", plan.version)
    };
    let _ = writeln!(
        out,
        "plan {} {}{}  {:?}  started {}{took}",
        plan.id, plan.workflow, version, plan.phase, plan.started_at
    );
    if let Some(message) = &plan.message {
        let _ = writeln!(out, "  {message}");
    }
    let sections = [("", &plan.tasks), ("finally ", &plan.finally)];
    let total: usize = sections
        .iter()
        .map(|(_, t)| t.iter().map(|t| t.runs.len().max(1)).sum::<usize>())
        .sum();
    let mut i = 0;
    for (label, tasks) in sections {
        for task in tasks {
            for run in &task.runs {
                i += 1;
                let branch = if i == total { "└─" } else { "├─" };
                let line =
                    run_line(task, run).replace('\n', &format!("\n{}  ", if i == total { " " } else { "│" }));
                let _ = writeln!(out, "{branch} {label}{line}");
            }
        }
    }
    out
}

/// Finished plans, newest last.
#[must_use]
pub fn render_history(history: &[PlanSummary]) -> String {
    let mut out = String::new();
    for s in history {
        let took = s
            .finished_at
            .map_or_else(|| "-".into(), |f| seconds(s.started_at, f));
        let _ = write!(
            out,
            "{}  {:<18} {:<10} {:>8}  {}",
            s.started_at,
            s.workflow,
            format!("{:?}", s.phase),
            took,
            s.id
        );
        if let Some(task) = &s.failed_task {
            let _ = write!(out, "\n    failed task {task}");
        }
        if let Some(e) = &s.error {
            let _ = write!(out, ": {} ({})", e.message, e.class.as_str());
        } else if let Some(m) = &s.message {
            let _ = write!(out, ": {m}");
        }
        out.push('\n');
    }
    out
}

fn node_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn task_state(task: &PlannedTask) -> &'static str {
    let states: Vec<TaskState> = task.runs.iter().map(|r| r.state).collect();
    let all = |s: TaskState| !states.is_empty() && states.iter().all(|x| *x == s);
    if states.contains(&TaskState::Failed) {
        "Failed"
    } else if states.contains(&TaskState::Running) {
        "Running"
    } else if all(TaskState::Succeeded) {
        "Succeeded"
    } else if all(TaskState::Skipped) {
        "Skipped"
    } else if states.contains(&TaskState::Cancelled) {
        "Cancelled"
    } else {
        "Pending"
    }
}

/// The plan's DAG in Graphviz DOT (one node per task, coloured by state).
#[must_use]
pub fn render_dot(plan: &Plan) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=filled];\n",
        plan.workflow
    );
    for task in plan.tasks.iter().chain(&plan.finally) {
        let color = match task_state(task) {
            "Succeeded" => "palegreen",
            "Failed" => "salmon",
            "Running" => "lightblue",
            "Skipped" | "Cancelled" => "lightgrey",
            _ => "white",
        };
        let runs = if task.runs.len() > 1 {
            format!(" x{}", task.runs.len())
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {} [label=\"{}{runs}\\n{}\\n{}\", fillcolor={color}];",
            node_id(&task.name),
            task.name,
            task.task_type,
            task_state(task)
        );
        for dep in &task.depends_on {
            let _ = writeln!(out, "  {} -> {};", node_id(dep), node_id(&task.name));
        }
    }
    out.push_str("}\n");
    out
}

/// The plan's DAG as a Mermaid flowchart.
#[must_use]
pub fn render_mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for task in plan.tasks.iter().chain(&plan.finally) {
        let runs = if task.runs.len() > 1 {
            format!(" x{}", task.runs.len())
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {}[\"{}{runs}<br/>{}<br/>{}\"]:::{}",
            node_id(&task.name),
            task.name,
            task.task_type,
            task_state(task),
            task_state(task).to_ascii_lowercase()
        );
        for dep in &task.depends_on {
            let _ = writeln!(out, "  {} --> {}", node_id(dep), node_id(&task.name));
        }
    }
    out.push_str(
        "  classDef succeeded fill:#9f9\n  classDef failed fill:#f99\n  classDef running fill:#9cf\n  classDef skipped fill:#ddd\n  classDef cancelled fill:#ddd\n  classDef pending fill:#fff\n",
    );
    out
}
