//! The operator's clock: the only place that reads wall time (the engine takes time as an argument).

use sei_engine::Timestamp;

/// Now, as the engine's timestamp.
#[must_use]
pub fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(millis)
}

/// Now, as a Kubernetes `Time`.
#[must_use]
pub fn now_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// How long from now until `at` (zero when past).
#[must_use]
pub fn until(at: Timestamp) -> std::time::Duration {
    let ms = at.unix_millis().saturating_sub(now().unix_millis());
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
