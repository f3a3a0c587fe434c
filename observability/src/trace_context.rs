//! W3C trace context (`traceparent`) as plain data, and deterministic ids derived from a plan's journal.
//!
//! A plan is one trace. Its trace id and root span id are derived from the plan id, and each task attempt's
//! span id from (plan id, task name, attempt), so that spans emitted after a restart, from the journal's
//! timestamps, land in the same trace with the right parents and never twice under two ids.

use uuid::Uuid;

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
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; `None` for anything else or all-zero ids.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || flags.len() != 2 {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = decode_hex(span)?.try_into().ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
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

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            encode_hex(&self.trace_id),
            encode_hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// The span id of one attempt of one task of a plan (`name = "plan"`, `attempt = 0` is the root span).
/// FNV-1a over the inputs, then a 64-bit mix: stable across releases and machines, never zero.
#[must_use]
pub fn derive_span_id(plan_id: Uuid, name: &str, attempt: u32) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in plan_id
        .as_bytes()
        .iter()
        .chain(name.as_bytes())
        .chain(&attempt.to_le_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
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

fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2)
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Links a `tracing` span (exported through the OpenTelemetry layer) to the span `traceparent` names, e.g. a
/// reconcile span to the plan it advances. Does nothing for a malformed `traceparent`.
pub fn link_span(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let Some(tp) = TraceParent::parse(traceparent) {
        let cx = SpanContext::new(
            TraceId::from_bytes(tp.trace_id),
            SpanId::from_bytes(tp.span_id),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        span.add_link(cx);
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
    }

    #[test]
    fn malformed_or_zero_traceparents_are_refused() {
        for bad in [
            "",
            "00-123-456-01",
            "01-123456789abcdef01122334455667788-1122334455667788-01",
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
