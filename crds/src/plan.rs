//! The workflow journal stored in `status.plan` and the finished-plan summaries in `status.planHistory`.
//!
//! Both are the engine's own types ([`sei_engine::Plan`], [`sei_engine::PlanSummary`]); a finished plan is
//! summarised with [`push_plan_history`] and cleared, so `plan == null` is the steady state.

pub use sei_engine::{Plan, PlanSummary};

/// How many finished-plan summaries `status.planHistory` keeps (the oldest is dropped first).
pub const PLAN_HISTORY_LIMIT: usize = 10;

/// Appends `summary` to `history` (replacing an entry with the same plan id) and drops the oldest entries
/// beyond [`PLAN_HISTORY_LIMIT`]; see [`sei_engine::push_history`].
pub fn push_plan_history(history: &mut Vec<PlanSummary>, summary: PlanSummary) {
    sei_engine::push_history(history, summary, PLAN_HISTORY_LIMIT);
}
