//! The SeiNode Events the reference names for status transitions (reference 3.1 steps 7 and 12), computed
//! from the status before and after one reconcile (pure), so they cost no status write:
//!
//! | Event | type | when |
//! |---|---|---|
//! | `SidecarReadinessLost` | Warning | `SidecarReady` becomes False/`NotReady` (the sidecar answers 503; a `mark-ready` plan follows) |
//! | `SidecarReadinessRestored` | Normal | `SidecarReady` goes from False to True |
//! | `NodeFailed` | Warning | the phase becomes `Failed` (the reference repeats it on every reconcile of a Failed node; here once, on the transition, since a Failed node is not requeued) |
//!
//! `StateSyncBlocked` is emitted by the state-sync gate itself ([`crate::statesync`], in the node reconcile).

use kube::runtime::events::EventType;
use sei_crds::conditions::{self, reasons};
use sei_crds::{SeiNodePhase, SeiNodeStatus};

use crate::lifecycle::Event;

/// The Events of the transitions from `before` to `after`.
#[must_use]
pub fn transitions(before: &SeiNodeStatus, after: &SeiNodeStatus) -> Vec<Event> {
    let mut out = Vec::new();
    let sidecar = |s: &SeiNodeStatus| {
        s.condition(conditions::SIDECAR_READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    if let (was, Some((now, reason, message))) = (sidecar(before), sidecar(after)) {
        let was_status = was.as_ref().map(|(s, _, _)| s.as_str());
        let was_not_ready = was
            .as_ref()
            .is_some_and(|(s, r, _)| s == "False" && r == reasons::NOT_READY);
        if now == "False" && reason == reasons::NOT_READY && !was_not_ready {
            out.push((
                EventType::Warning,
                "SidecarReadinessLost",
                format!("{message}: seid is gated until mark-ready runs again"),
            ));
        }
        if now == "True" && was_status == Some("False") {
            out.push((EventType::Normal, "SidecarReadinessRestored", message.clone()));
        }
    }
    if after.phase == Some(SeiNodePhase::Failed) && before.phase != Some(SeiNodePhase::Failed) {
        let failed = after.plan_history.last().map_or_else(String::new, |p| {
            let task = p.failed_task.as_deref().unwrap_or("a task");
            let why = p.error.as_ref().map_or("", |e| e.message.as_str());
            format!("plan {} ({}) failed at {task}: {why}", p.id, p.workflow)
        });
        out.push((
            EventType::Warning,
            "NodeFailed",
            format!(
                "the node failed: {failed}; set the annotation {} to a new value to retry, or delete and recreate it",
                sei_crds::labels::RETRY
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sei_crds::conditions::ConditionStatus;

    use super::*;

    fn with_sidecar(status: ConditionStatus, reason: &str) -> SeiNodeStatus {
        let mut s = SeiNodeStatus::default();
        s.set_condition(crate::lifecycle::condition(
            conditions::SIDECAR_READY,
            status,
            reason,
            "m",
            None,
        ));
        s
    }

    fn reasons_of(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|(_, r, _)| *r).collect::<Vec<_>>()
    }

    #[test]
    fn sidecar_readiness_lost_and_restored_on_transitions_only() {
        let ready = with_sidecar(ConditionStatus::True, reasons::READY);
        let not_ready = with_sidecar(ConditionStatus::False, reasons::NOT_READY);
        let unknown = with_sidecar(ConditionStatus::Unknown, reasons::UNREACHABLE);
        assert_eq!(
            reasons_of(&transitions(&ready, &not_ready)),
            ["SidecarReadinessLost"]
        );
        assert!(transitions(&not_ready, &not_ready).is_empty());
        assert_eq!(
            reasons_of(&transitions(&not_ready, &ready)),
            ["SidecarReadinessRestored"]
        );
        assert!(transitions(&ready, &ready).is_empty());
        assert!(transitions(&ready, &unknown).is_empty());
        assert!(transitions(&unknown, &ready).is_empty());
    }

    #[test]
    fn node_failed_once_when_the_phase_becomes_failed() {
        let running = SeiNodeStatus {
            phase: Some(SeiNodePhase::Initializing),
            ..SeiNodeStatus::default()
        };
        let failed = SeiNodeStatus {
            phase: Some(SeiNodePhase::Failed),
            ..SeiNodeStatus::default()
        };
        let events = transitions(&running, &failed);
        assert_eq!(reasons_of(&events), ["NodeFailed"]);
        assert_eq!(events[0].0, EventType::Warning);
        assert!(transitions(&failed, &failed).is_empty());
    }
}
