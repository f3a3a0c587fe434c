//! Telemetry for every binary of the workspace: one [`init`] that installs a `tracing` subscriber (text or
//! JSON logs with an `EnvFilter`) and, when an OTLP endpoint is configured, an OpenTelemetry layer exporting
//! spans over OTLP/gRPC; the span and attribute names ([`fields`]); and pure helpers for W3C trace context
//! ([`trace_context`]) so that a plan's trace survives reconciles and operator restarts.
//!
//! # Owns, and must not
//! Owns telemetry setup, span and attribute names and trace context. Must not depend on Kubernetes or on the
//! engine's internals.

pub mod fields;
pub mod journal;
pub mod trace_context;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How logs are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What [`init`] sets up.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans.
    pub service_name: String,
    /// OTLP/gRPC endpoint (e.g. `http://127.0.0.1:4317`); no span export when `None`.
    pub otlp_endpoint: Option<String>,
    /// Log line format.
    pub log_format: LogFormat,
    /// `EnvFilter` directives, e.g. `info,sei_operator=debug`.
    pub filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "sei-operator".to_owned(),
            otlp_endpoint: None,
            log_format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

/// Errors of [`init`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filter directives do not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The directives given.
        filter: String,
        /// Why they were refused.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes and shuts down span export when dropped: bind it to a named variable in `main`.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// The tracer provider, when spans are exported (for code that emits spans from journal timestamps).
    #[must_use]
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }

    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = &e as &dyn std::error::Error, "Flushing spans failed");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Nothing useful can be done with a shutdown error while the process exits.
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber (and the W3C trace-context propagator).
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, Error> {
    let filter = EnvFilter::try_new(&cfg.filter).map_err(|source| Error::Filter {
        filter: cfg.filter.clone(),
        source,
    })?;
    let fmt = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = match &cfg.otlp_endpoint {
        Some(endpoint) => Some(provider(&cfg.service_name, endpoint)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("sei-operator")));
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

/// A tracer provider exporting to `endpoint` over OTLP/gRPC in batches.
pub fn provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, Error> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| Error::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}
