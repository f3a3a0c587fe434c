//! Spans replayed from a plan's journal: each finished task attempt and each finished plan becomes one span
//! with ids derived from the journal ([`crate::trace_context`]) and the journal's own timestamps, exported
//! directly over OTLP (not through a live tracer, whose ids would be random). Emitting them only after the
//! journal that records the end was persisted makes a plan one complete trace across reconciles and restarts.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

/// One span rebuilt from the journal.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalSpan {
    /// Trace id (the plan's).
    pub trace_id: [u8; 16],
    /// This span's id.
    pub span_id: [u8; 8],
    /// The parent span's id (`None` for the plan's root span).
    pub parent: Option<[u8; 8]>,
    /// Span name, e.g. `task apply-statefulset` or `plan node-init`.
    pub name: String,
    /// Start, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// End, milliseconds since the Unix epoch.
    pub end_ms: i64,
    /// Attributes.
    pub attributes: Vec<(&'static str, String)>,
    /// An error message when the attempt or plan did not succeed.
    pub error: Option<String>,
}

fn at(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl JournalSpan {
    fn into_span_data(self, scope: &InstrumentationScope) -> SpanData {
        let context = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let status = match self.error {
            Some(message) => Status::error(message),
            None => Status::Ok,
        };
        SpanData {
            span_context: context,
            parent_span_id: self.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(self.name),
            start_time: at(self.start_ms),
            end_time: at(self.end_ms.max(self.start_ms)),
            attributes: self
                .attributes
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, v))
                .collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// Exports journal spans over OTLP/gRPC.
pub struct JournalExporter {
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
}

impl JournalExporter {
    /// An exporter to `endpoint` whose spans carry `service.name = service_name`.
    pub fn new(service_name: &str, endpoint: &str) -> Result<Self, crate::Error> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|source| crate::Error::Exporter {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        exporter.set_resource(
            &Resource::builder()
                .with_service_name(service_name.to_owned())
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        Ok(Self {
            exporter,
            scope: InstrumentationScope::builder("sei-operator.journal").build(),
        })
    }

    /// Sends `spans` (best effort: a failure is logged, the journal stays the source of truth).
    pub async fn export(&self, spans: Vec<JournalSpan>) {
        if spans.is_empty() {
            return;
        }
        let batch = spans.into_iter().map(|s| s.into_span_data(&self.scope)).collect();
        if let Err(e) = self.exporter.export(batch).await {
            tracing::warn!(error = %e, "Exporting journal spans failed");
        }
    }
}
