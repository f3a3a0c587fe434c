//! The workflow journal stored in `status.plan` and the finished-plan summaries in `status.planHistory`.
//!
//! PLACEHOLDER: the engine's journal types (`sei_engine::Plan`, `sei_engine::PlanSummary`) are not published
//! yet. Until they are, both are kept as opaque JSON objects; the CRD schema stores them with
//! `x-kubernetes-preserve-unknown-fields`, which stays valid when the typed journal replaces the alias
//! (the apiserver keeps whatever the engine writes).

/// The active plan of a resource (`status.plan`): opaque JSON until the engine's journal type lands.
pub type Plan = serde_json::Value;

/// Summary of a finished plan (`status.planHistory[]`): opaque JSON until the engine's type lands.
pub type PlanSummary = serde_json::Value;

/// How many finished-plan summaries `status.planHistory` keeps (the oldest is dropped first).
pub const PLAN_HISTORY_LIMIT: usize = 10;

/// Appends `summary` to `history` and drops the oldest entries beyond [`PLAN_HISTORY_LIMIT`].
pub fn push_plan_history(history: &mut Vec<PlanSummary>, summary: PlanSummary) {
    history.push(summary);
    if history.len() > PLAN_HISTORY_LIMIT {
        let excess = history.len() - PLAN_HISTORY_LIMIT;
        history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_history_keeps_the_newest_ten() {
        let mut history = Vec::new();
        for i in 0..15 {
            push_plan_history(&mut history, serde_json::json!({ "id": i }));
        }
        assert_eq!(history.len(), PLAN_HISTORY_LIMIT);
        assert_eq!(history[0]["id"], 5);
        assert_eq!(history[9]["id"], 14);
    }
}
