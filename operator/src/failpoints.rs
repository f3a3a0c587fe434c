//! Crash injection at the I/O boundaries of a reconcile, for the durability tests (issue 11).
//!
//! Every point below is compiled in and inert: it fires only when the operator is started with
//! `SEI_FAILPOINTS` set, in the [`fail`] crate's syntax (`name=action;name2=action`, where an action is for
//! example `return`, `25%return` or `1*return`). A point that fires with `return` ends the process at once with
//! exit code [`CRASH_EXIT_CODE`] (no graceful shutdown, no lease release, nothing flushed): what a `SIGKILL` or
//! an out-of-memory kill does at that instant.
//!
//! | point | where | what a crash there tests |
//! |---|---|---|
//! | `drive::after-start` | a task start returned, its observation not yet in the journal | the start repeats under the same key; recovery by lookup |
//! | `drive::after-poll` | a poll returned, its observation not yet in the journal | a completion or failure is learned again |
//! | `status::before-write` | the reconcile's status is ready, not sent | every effect of the reconcile is lost from the journal |
//! | `status::after-write` | the status write succeeded, nothing after it ran | stale-copy bookkeeping, metrics and spans are lost |
//! | `status::after-spans` | the journal's spans were exported | the next reconcile starts from a fully recorded state |
//! | `runs::after-target-write` | a WorkflowRun's plan is in its target's status, the run's own status not yet updated | the run finds its plan by the id it recorded first; no second plan |
//! | `sidecar::skip-submit-lookup` | tasks crate: a sidecar start submits without looking its key up | *breaks* the guarantee on purpose: the chaos test must then report duplicates |
//!
//! `SEI_FAILPOINTS` must never be set in production; the operator logs a warning naming every active point.

/// Exit code of a crash injected by a failpoint.
pub const CRASH_EXIT_CODE: i32 = 86;

/// The points where the operator can be made to crash (the first five rows of the table).
pub const CRASH_POINTS: &[&str] = &[
    "drive::after-start",
    "drive::after-poll",
    "status::before-write",
    "status::after-write",
    "status::after-spans",
];

/// Every point `SEI_FAILPOINTS` may name: the crash points and the lookup breaker.
pub const POINTS: &[&str] = &[
    CRASH_POINTS[0],
    CRASH_POINTS[1],
    CRASH_POINTS[2],
    CRASH_POINTS[3],
    CRASH_POINTS[4],
    RUN_CRASH_POINT,
    sei_tasks::catalog::sidecar::SKIP_LOOKUP_FAILPOINT,
];

/// The WorkflowRun crash point (not in [`CRASH_POINTS`]: the chaos test creates no runs).
pub const RUN_CRASH_POINT: &str = "runs::after-target-write";

/// Configures the points named in `spec` (`SEI_FAILPOINTS`). Unknown names and bad actions are errors.
pub fn configure(spec: &str) -> Result<Vec<String>, String> {
    let mut active = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, actions) = entry
            .split_once('=')
            .ok_or_else(|| format!("SEI_FAILPOINTS: `{entry}` is not name=action"))?;
        let name = name.trim();
        if !POINTS.contains(&name) {
            return Err(format!(
                "SEI_FAILPOINTS: unknown failpoint `{name}` (known: {})",
                POINTS.join(", ")
            ));
        }
        fail::cfg(name, actions.trim()).map_err(|e| format!("SEI_FAILPOINTS: {name}: {e}"))?;
        active.push(format!("{name}={}", actions.trim()));
    }
    Ok(active)
}

/// Crashes the process when the point `name` fires (see the module table).
pub fn crash_point(name: &'static str) {
    if fail::eval(name, |_| ()).is_some() {
        // A crash on purpose: print to stderr directly (the tracing pipeline may buffer) and exit without
        // running destructors, like a kill.
        eprintln!("failpoint {name}: crashing (exit {CRASH_EXIT_CODE})");
        std::process::exit(CRASH_EXIT_CODE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_points_and_bad_actions_are_refused_with_the_name() {
        let e = configure("drive::nowhere=return").unwrap_err();
        assert!(e.contains("unknown failpoint `drive::nowhere`"), "{e}");
        let e = configure("drive::after-poll=sometimes").unwrap_err();
        assert!(e.contains("drive::after-poll"), "{e}");
        assert!(configure("").unwrap().is_empty());
    }
}
