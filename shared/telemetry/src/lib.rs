//! Telemetry for every Cognition process: `tracing` with plain or JSON logs, optional OTLP trace
//! export, and W3C trace context carried across every gRPC hop.
//!
//! * [`init`] installs the global subscriber once per process (idempotent: a second call, e.g.
//!   from tests that start several services in one process, is a no-op).
//! * [`grpc::ServerTraceLayer`] (tower layer for tonic servers) extracts `traceparent` and opens
//!   one span per call; [`grpc::InjectTraceContext`] (tonic interceptor for clients) injects the
//!   current span's context into outgoing metadata.
//!
//! Metric names are not here: each service keeps its own in a `metrics` module.

pub mod grpc;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Telemetry settings, read from `COGNITION_LOG_*` and `COGNITION_OTEL_*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// `COGNITION_LOG_FORMAT`: `plain` (default) or `json`.
    pub log_format: LogFormat,
    /// `COGNITION_LOG_LEVEL`: an `EnvFilter` directive, default `info`.
    pub log_level: String,
    /// `COGNITION_OTEL_ENABLED`: export spans by OTLP/gRPC.
    pub otel_enabled: bool,
    /// `COGNITION_OTEL_ENDPOINT`, default `http://localhost:4317`.
    pub otel_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Plain,
            log_level: "info".into(),
            otel_enabled: false,
            otel_endpoint: "http://localhost:4317".into(),
        }
    }
}

impl cognition_config::Validate for TelemetryConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if EnvFilter::try_new(&self.log_level).is_err() {
            problems.push(format!(
                "COGNITION_LOG_LEVEL={:?} is not a valid filter",
                self.log_level
            ));
        }
        if self.otel_enabled && !self.otel_endpoint.starts_with("http") {
            problems.push(format!(
                "COGNITION_OTEL_ENDPOINT={:?} must be an http(s) URL",
                self.otel_endpoint
            ));
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// Keeps the OTLP exporter alive; flushes spans when dropped.
pub struct Guard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs logging (and OTLP export when enabled) for the process `service`.
///
/// Must run inside a Tokio runtime when OTLP is enabled.
pub fn init(service: &'static str, config: &TelemetryConfig) -> Result<Guard, Error> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    if INSTALLED.get().is_some() {
        return Ok(Guard { provider: None });
    }
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match config.log_format {
        LogFormat::Plain => tracing_subscriber::fmt::layer().with_target(true).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let (otel, provider) = if config.otel_enabled {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otel_endpoint.clone())
            .build()
            .map_err(|source| Error::Exporter {
                endpoint: config.otel_endpoint.clone(),
                source,
            })?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
        (Some(layer), Some(provider))
    } else {
        (None, None)
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    let _ = INSTALLED.set(());
    if !installed {
        return Ok(Guard { provider: None });
    }
    Ok(Guard { provider })
}
