//! W3C trace context (`traceparent`) as plain data, and deterministic ids derived from a plan's journal.
//! The header is read and written by OpenTelemetry's [`TraceContextPropagator`]; [`TraceParent`] only keeps
//! its ids as bytes, the form the journal exporter and the derived span ids use.
//!
//! A plan is one trace. Its trace id and root span id are derived from the plan id, and each task attempt's
//! span id from (plan id, task name, attempt), so that spans emitted after a restart, from the journal's
//! timestamps, land in the same trace with the right parents and never twice under two ids.

use std::collections::HashMap;
use std::hash::Hasher as _;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use uuid::Uuid;

/// The W3C header name.
const TRACEPARENT: &str = "traceparent";

/// One `traceparent` value as the propagator's carrier.
struct Header<'a>(&'a str);

impl Extractor for Header<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The span context a `traceparent` names, as OpenTelemetry's propagator reads it (`None` when it is
/// malformed or has an all-zero id).
fn extract(traceparent: &str) -> Option<SpanContext> {
    let cx = TraceContextPropagator::new().extract(&Header(traceparent));
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.clone())
}

/// A parsed `traceparent` header (version 00).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// 8-byte parent span id (never all zero).
    pub span_id: [u8; 8],
    /// The sampled flag.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header with OpenTelemetry's [`TraceContextPropagator`] (W3C rules: lowercase hex,
    /// exactly four fields for version 00, later versions read by their first four, version `ff` refused);
    /// `None` for anything malformed or all-zero ids.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        // Kept by hand: the propagator left-pads short ids (`00-123-456-01`), which W3C forbids.
        let mut ids = s.trim().split('-').skip(1).map(str::len);
        if (ids.next(), ids.next()) != (Some(32), Some(16)) {
            return None;
        }
        let sc = extract(s)?;
        Some(Self {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        })
    }

    /// The OpenTelemetry span context of these ids (remote, as it comes from a journal or a header).
    #[must_use]
    pub fn span_context(&self) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            TraceState::default(),
        )
    }

    /// The root context of a plan: trace id and root span id derived from the plan id.
    #[must_use]
    pub fn for_plan(plan_id: Uuid) -> Self {
        let trace_id = *plan_id.as_bytes();
        let trace_id = if trace_id == [0; 16] { [1; 16] } else { trace_id };
        Self {
            trace_id,
            span_id: derive_span_id(plan_id, "plan", 0),
            sampled: true,
        }
    }

    /// The same trace with another parent span.
    #[must_use]
    pub fn with_span(self, span_id: [u8; 8]) -> Self {
        Self { span_id, ..self }
    }
}

/// The `traceparent` header, as OpenTelemetry's [`TraceContextPropagator`] writes it.
impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cx = opentelemetry::Context::new().with_remote_span_context(self.span_context());
        let mut headers = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut headers);
        f.write_str(headers.get(TRACEPARENT).ok_or(std::fmt::Error)?)
    }
}

/// The span id of one attempt of one task of a plan (`name = "plan"`, `attempt = 0` is the root span).
/// FNV-1a (the `fnv` crate, also used by the engine's retry jitter) over the inputs, then a 64-bit mix: stable
/// across releases and machines, never zero.
#[must_use]
pub fn derive_span_id(plan_id: Uuid, name: &str, attempt: u32) -> [u8; 8] {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(plan_id.as_bytes());
    hasher.write(name.as_bytes());
    hasher.write(&attempt.to_le_bytes());
    let mut h = hasher.finish();
    // splitmix64 finaliser for avalanche
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    if h == 0 {
        1u64.to_be_bytes()
    } else {
        h.to_be_bytes()
    }
}

/// Links a `tracing` span (exported through the OpenTelemetry layer) to the span `traceparent` names, e.g. a
/// reconcile span to the plan it advances. Does nothing for a malformed `traceparent`.
pub fn link_span(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let Some(tp) = TraceParent::parse(traceparent) {
        span.add_link(tp.span_context());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_through_its_text_form() {
        let tp = TraceParent::for_plan(Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788));
        let text = tp.to_string();
        assert_eq!(text.len(), 55);
        assert!(text.starts_with("00-123456789abcdef01122334455667788-"));
        assert!(text.ends_with("-01"));
        assert_eq!(TraceParent::parse(&text), Some(tp));
        let unsampled = tp.with_span([7; 8]);
        let unsampled = TraceParent {
            sampled: false,
            ..unsampled
        };
        assert!(unsampled.to_string().ends_with("-0707070707070707-00"));
        assert_eq!(TraceParent::parse(&unsampled.to_string()), Some(unsampled));
    }

    #[test]
    fn later_versions_are_read_by_their_first_four_fields() {
        // W3C trace context: a parser of version 00 reads a higher version's first four fields.
        let tp = TraceParent::parse("01-123456789abcdef01122334455667788-1122334455667788-01-more").unwrap();
        assert_eq!(tp.span_id, [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    }

    /// `derive_span_id(Uuid::from_u128(42), "apply-statefulset", 1)` as the hand-written FNV-1a computed it.
    const PINNED_SPAN_ID: [u8; 8] = [0xea, 0xab, 0xed, 0x28, 0xe2, 0xb4, 0xc7, 0x41];

    #[test]
    fn span_ids_are_pinned() {
        // Spans of plans written before an upgrade must keep their ids: these values are part of the format.
        assert_eq!(
            derive_span_id(Uuid::from_u128(42), "apply-statefulset", 1),
            PINNED_SPAN_ID
        );
    }

    #[test]
    fn malformed_or_zero_traceparents_are_refused() {
        for bad in [
            "",
            "00-123-456-01",
            "ff-123456789abcdef01122334455667788-1122334455667788-01",
            "00-00000000000000000000000000000000-1122334455667788-01",
            "00-123456789abcdef01122334455667788-0000000000000000-01",
            "00-123456789ABCDEF01122334455667788-1122334455667788-01",
            "00-123456789abcdef01122334455667788-1122334455667788-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn span_ids_are_stable_and_distinct_per_task_and_attempt() {
        let plan = Uuid::from_u128(42);
        assert_eq!(
            derive_span_id(plan, "apply-statefulset", 1),
            derive_span_id(plan, "apply-statefulset", 1)
        );
        assert_ne!(
            derive_span_id(plan, "apply-statefulset", 1),
            derive_span_id(plan, "apply-statefulset", 2)
        );
        assert_ne!(
            derive_span_id(plan, "apply-statefulset", 1),
            derive_span_id(plan, "apply-service", 1)
        );
        assert_ne!(
            derive_span_id(plan, "a", 1),
            derive_span_id(Uuid::from_u128(43), "a", 1)
        );
    }
}
