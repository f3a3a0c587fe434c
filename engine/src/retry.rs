//! Retry policy maths: which failures retry, and how long to wait before the next attempt.
//!
//! The delay before attempt `n + 1`, after attempt `n` failed, is
//! `base(n) = min(max, initial × factor^(n-1))`, then jittered:
//! `delay = base(n) × (1 − jitter × r)` where `r ∈ [0, 1)` is a deterministic hash of
//! (plan id, task name, attempt). `jitter = 1` is AWS-style "full jitter" (uniform in `[0, base)`),
//! `jitter = 0` is plain exponential backoff. No random number generator is involved, so replaying
//! a journal computes the same `nextAttemptAt` and a property test can reproduce any run.

use std::hash::Hasher as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::plan::ErrorClass;
use crate::time::Duration;

/// How a task retries. Stored in the plan only when it differs from [`RetryPolicy::default`],
/// and then only the fields that differ (absent fields take their default on read).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryPolicy {
    /// Attempts allowed in total, first included (1 = never retry).
    #[serde(skip_serializing_if = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Base delay before the second attempt.
    #[serde(skip_serializing_if = "defaults::initial")]
    pub initial: Duration,
    /// Multiplier applied to the base delay after every failed attempt (at least 1).
    #[serde(skip_serializing_if = "defaults::factor")]
    pub factor: f64,
    /// Cap on the base delay.
    #[serde(skip_serializing_if = "defaults::max")]
    pub max: Duration,
    /// Fraction of the base delay that is randomised (0 = none, 1 = full jitter).
    #[serde(skip_serializing_if = "defaults::jitter")]
    pub jitter: f64,
    /// Error classes that consume an attempt and retry; any other class fails the task at once.
    #[serde(skip_serializing_if = "defaults::retry_on")]
    pub retry_on: Vec<ErrorClass>,
}

/// `skip_serializing_if` predicates: whether a field holds its default value.
#[allow(
    clippy::trivially_copy_pass_by_ref,
    clippy::float_cmp,
    reason = "serde passes references; defaults are exact"
)]
mod defaults {
    use super::{DEFAULT_RETRY_ON, Duration, ErrorClass, RetryPolicy};

    pub(super) fn max_attempts(v: &u32) -> bool {
        *v == RetryPolicy::default().max_attempts
    }
    pub(super) fn initial(v: &Duration) -> bool {
        *v == RetryPolicy::default().initial
    }
    pub(super) fn factor(v: &f64) -> bool {
        *v == RetryPolicy::default().factor
    }
    pub(super) fn max(v: &Duration) -> bool {
        *v == RetryPolicy::default().max
    }
    pub(super) fn jitter(v: &f64) -> bool {
        *v == RetryPolicy::default().jitter
    }
    pub(super) fn retry_on(v: &[ErrorClass]) -> bool {
        v == DEFAULT_RETRY_ON
    }
}

impl Default for RetryPolicy {
    /// One attempt; if a definition raises `maxAttempts` without a backoff, retries wait
    /// 5s, 10s, 20s … capped at 1m, with full jitter, on `Transient` and `Timeout` errors.
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial: Duration::from_secs(5),
            factor: 2.0,
            max: Duration::from_secs(60),
            jitter: 1.0,
            retry_on: DEFAULT_RETRY_ON.to_vec(),
        }
    }
}

/// Error classes retried when a definition does not list `retryOn`.
pub const DEFAULT_RETRY_ON: &[ErrorClass] = &[ErrorClass::Transient, ErrorClass::Timeout];

impl RetryPolicy {
    /// Whether a failure of `class` may be retried under this policy (attempt budget aside).
    pub fn retries(&self, class: ErrorClass) -> bool {
        self.retry_on.contains(&class)
    }

    /// Whether another attempt is allowed after attempt `failed_attempt` failed with `class`.
    pub fn allows_retry(&self, failed_attempt: u32, class: ErrorClass) -> bool {
        failed_attempt < self.max_attempts && self.retries(class)
    }

    /// The un-jittered delay after attempt `failed_attempt` (1-based) failed.
    pub fn base_delay(&self, failed_attempt: u32) -> Duration {
        // Repeated multiplication rather than `powi`, so the result never depends on the
        // platform's libm; the loop stops as soon as the cap is reached.
        let cap = self.max.as_millis();
        let mut delay = self.initial.as_millis().min(cap);
        for _ in 1..failed_attempt {
            if delay >= cap {
                break;
            }
            delay = scale(delay, self.factor).min(cap);
        }
        Duration::from_millis(delay)
    }

    /// The jittered delay after attempt `failed_attempt` of `task` in plan `plan_id` failed.
    ///
    /// # Guarantees
    /// Deterministic in its inputs, and never longer than [`Self::base_delay`].
    pub fn delay(&self, plan_id: Uuid, task: &str, failed_attempt: u32) -> Duration {
        let base = self.base_delay(failed_attempt).as_millis();
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 || base == 0 {
            return Duration::from_millis(base);
        }
        let r = unit_interval(plan_id, task, failed_attempt);
        let cut = scale(base, jitter * r).min(base);
        Duration::from_millis(base - cut)
    }
}

/// `millis × factor`, rounded down and saturated to the `u64` range.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "delays are far below 2^52 ms; the float product is clamped before the cast back"
)]
fn scale(millis: u64, factor: f64) -> u64 {
    let product = (millis as f64) * factor;
    if product.is_nan() || product <= 0.0 {
        0
    } else if product >= u64::MAX as f64 {
        u64::MAX
    } else {
        product as u64
    }
}

/// A deterministic number in `[0, 1)` derived from (plan id, task name, attempt): FNV-1a (the `fnv`
/// crate, also used for the derived span ids of traces) over the bytes, finished with the splitmix64
/// mixer so that neighbouring attempts spread evenly.
#[allow(
    clippy::cast_precision_loss,
    reason = "a 53-bit integer converts to f64 exactly"
)]
fn unit_interval(plan_id: Uuid, task: &str, attempt: u32) -> f64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(plan_id.as_bytes());
    hasher.write(task.as_bytes());
    hasher.write(&attempt.to_le_bytes());
    let hash = hasher.finish();
    let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_secs(5),
            factor: 2.0,
            max: Duration::from_secs(30),
            jitter,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn base_delay_grows_exponentially_and_is_capped() {
        let p = policy(0.0);
        let delays: Vec<u64> = (1..=6).map(|n| p.base_delay(n).as_millis() / 1000).collect();
        assert_eq!(delays, [5, 10, 20, 30, 30, 30]);
        assert_eq!(p.base_delay(u32::MAX).as_millis(), 30_000);
    }

    #[test]
    fn jitter_is_deterministic_and_bounded_by_the_base() {
        let p = policy(1.0);
        let id = Uuid::from_u128(7);
        for attempt in 1..50 {
            let d = p.delay(id, "task", attempt);
            assert_eq!(d, p.delay(id, "task", attempt));
            assert!(d <= p.base_delay(attempt));
        }
        let spread: std::collections::BTreeSet<u64> =
            (1..50).map(|n| p.delay(id, "task", n).as_millis()).collect();
        assert!(spread.len() > 5, "full jitter should spread delays: {spread:?}");
        assert_eq!(policy(0.0).delay(id, "task", 2), Duration::from_secs(10));
    }

    #[test]
    fn different_plans_jitter_differently() {
        let p = policy(1.0);
        let a = p.delay(Uuid::from_u128(1), "task", 3);
        let b = p.delay(Uuid::from_u128(2), "task", 3);
        let c = p.delay(Uuid::from_u128(1), "other", 3);
        assert!(a != b || a != c);
    }

    #[test]
    fn retry_budget_and_classes_decide_retries() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.allows_retry(1, ErrorClass::Transient));
        assert!(p.allows_retry(2, ErrorClass::Timeout));
        assert!(!p.allows_retry(3, ErrorClass::Transient));
        assert!(!p.allows_retry(1, ErrorClass::Terminal));
        assert!(!RetryPolicy::default().allows_retry(1, ErrorClass::Transient));
    }
}
