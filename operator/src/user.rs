//! What users ask of a plan (documented in the README and on the constants): `spec.paused` pauses and resumes
//! it, `sei.io/cancel-plan: <plan id>` cancels that active plan, `sei.io/retry: <new value>` retries a Failed
//! node.

use kube::api::ObjectMeta;
use kube::runtime::events::EventType;
use sei_crds::labels::{CANCEL_PLAN, RETRY};
use sei_engine::Plan;

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(|v| v.trim())
}

/// Cancels `plan` when the object's `sei.io/cancel-plan` annotation names it; the Event to publish, once (a
/// plan already stopping is left alone).
pub fn cancel_requested(meta: &ObjectMeta, plan: &mut Plan) -> Option<(EventType, &'static str, String)> {
    let wanted = annotation(meta, CANCEL_PLAN)?;
    if wanted != plan.id.to_string() {
        return None;
    }
    plan.cancel(format!("cancelled by the user ({CANCEL_PLAN})"))
        .then(|| {
            (
                EventType::Normal,
                "PlanCancelled",
                format!(
                    "plan {} ({}) cancelled through {CANCEL_PLAN}: no new task starts, tasks in flight finish",
                    plan.id, plan.workflow
                ),
            )
        })
}

/// Pauses `plan` (`spec.paused`): its clock stops; the Event to publish, once.
pub fn pause(plan: &mut Plan) -> Option<(EventType, &'static str, String)> {
    plan.pause(crate::clock::now()).then(|| {
        let note = format!(
            "plan {} ({}) paused: its deadline and timers are frozen",
            plan.id, plan.workflow
        );
        (EventType::Normal, "PlanPaused", note)
    })
}

/// Resumes a paused `plan` (its deadline and timers move by the pause); the Event to publish, once.
pub fn resume(plan: &mut Plan) -> Option<(EventType, &'static str, String)> {
    plan.resume(crate::clock::now()).then(|| {
        let note = format!("plan {} ({}) resumed", plan.id, plan.workflow);
        (EventType::Normal, "PlanResumed", note)
    })
}

/// The `sei.io/retry` value when it is new (differs from `observed`).
pub fn retry_requested<'a>(meta: &'a ObjectMeta, observed: Option<&str>) -> Option<&'a str> {
    annotation(meta, RETRY).filter(|v| !v.is_empty() && Some(*v) != observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(key: &str, value: &str) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_retry_value_is_acted_on_once() {
        let m = meta(RETRY, "1");
        assert_eq!(retry_requested(&m, None), Some("1"));
        assert_eq!(retry_requested(&m, Some("1")), None);
        assert_eq!(retry_requested(&meta(RETRY, ""), None), None);
        assert_eq!(retry_requested(&ObjectMeta::default(), None), None);
    }
}
