//! Telemetry for every Cognition process: `tracing` with plain or JSON logs, optional OTLP trace
//! export, and W3C trace context carried across every gRPC hop.
//!
//! * [`init`] installs the global subscriber once per process (idempotent: a second call, e.g.
//!   from tests that start several services in one process, is a no-op).
//! * [`grpc::ServerTraceLayer`] (tower layer for tonic servers) extracts `traceparent` and opens
//!   one span per call; [`grpc::InjectTraceContext`] (tonic interceptor for clients) injects the
//!   current span's context into outgoing metadata; [`grpc::inject_headers`] does the same for
//!   plain HTTP requests (the model calls).
//! * [`TraceParent`] carries a trace into a detached task (the session service's turn).
//! * JSON log lines carry `trace_id` and `span_id` ([`json`]).
//!
//! Every process keeps OpenTelemetry span data (ids, parents), exporting or not: that is what
//! carries a caller's trace to the next hop and puts the ids on log lines. With
//! `COGNITION_OTEL_ENABLED` the spans are also exported by OTLP/gRPC in batches (the standard
//! `OTEL_BSP_*` variables tune the batches, e.g. `OTEL_BSP_SCHEDULE_DELAY` in milliseconds), and
//! dropping the [`Guard`] flushes them. Which spans are kept is `COGNITION_OTEL_LEVEL` (default
//! `info`, the level of every Cognition span), apart from `COGNITION_LOG_LEVEL`.
//!
//! Metric names are not here: each service keeps its own in a `metrics` module.

pub mod grpc;
pub mod json;
mod parent;

pub use parent::TraceParent;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use serde::Deserialize;
use tracing_subscriber::filter::FilterExt as _;
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
    /// `COGNITION_OTEL_LEVEL`: an `EnvFilter` directive choosing the spans (and, when exported,
    /// the span events) kept, default `info`; independent of `COGNITION_LOG_LEVEL`, so quiet
    /// logs still give whole traces.
    pub otel_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Plain,
            log_level: "info".into(),
            otel_enabled: false,
            otel_endpoint: "http://localhost:4317".into(),
            otel_level: "info".into(),
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
        if EnvFilter::try_new(&self.otel_level).is_err() {
            problems.push(format!(
                "COGNITION_OTEL_LEVEL={:?} is not a valid filter",
                self.otel_level
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
    let (subscriber, provider) = subscriber(service, config, std::io::stdout)?;
    let installed = subscriber.try_init().is_ok();
    let _ = INSTALLED.set(());
    if !installed {
        return Ok(Guard { provider: None });
    }
    Ok(Guard { provider })
}

/// The subscriber [`init`] installs, writing log lines to `writer`, and the exporting provider
/// when OTLP export is enabled.
fn subscriber<W>(
    service: &'static str,
    config: &TelemetryConfig,
    writer: W,
) -> Result<
    (
        impl tracing::Subscriber + Send + Sync + 'static,
        Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    ),
    Error,
>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // Each layer has its own filter: the log level does not decide which spans are traced. The
    // log layer also sees the spans the trace keeps (not their events), so that its lines name
    // the spans (and their ids) they were written in.
    let is_span = || tracing_subscriber::filter::filter_fn(|m| m.is_span());
    let log_filter = filter(&config.log_level).or(filter(&config.otel_level).and(is_span()));
    let otel_filter = filter(&config.otel_level);
    let fmt = match config.log_format {
        LogFormat::Plain => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(true)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json::WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_filter(log_filter)
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
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_filter(otel_filter)
            .boxed();
        (layer, Some(provider))
    } else {
        // No exporter: spans get ids and parents (for propagation and log lines) and are
        // dropped when they end. Events are not copied onto spans nobody reads.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_location(false)
            .with_threads(false)
            .with_filter(otel_filter.and(is_span()))
            .boxed();
        (layer, None)
    };
    Ok((
        tracing_subscriber::registry().with(fmt).with(otel),
        provider,
    ))
}

/// The `EnvFilter` of `directives` (checked by `validate`; `info` if invalid anyway).
fn filter(directives: &str) -> EnvFilter {
    EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"))
}
