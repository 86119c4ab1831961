//! JSON log lines that carry the trace: every line emitted inside a span starts with top-level
//! `trace_id` and `span_id` (lowercase hex, as in `traceparent`) of the innermost span, so a log
//! line can be found from a trace and the other way round.
//!
//! The ids come from the OpenTelemetry data that the `tracing-opentelemetry` layer keeps on each
//! span. [`crate::init`] installs that layer in every process, exporting or not, so the ids are
//! there whether `COGNITION_OTEL_ENABLED` is set or not (without export they still follow the
//! caller's `traceparent`, so the lines of one turn share one trace id across the services).
//! Lines outside any span have neither field.

use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps a JSON event format (one object per line) and inserts `trace_id` and `span_id` as its
/// first fields.
#[derive(Debug, Clone)]
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                let comma = if rest.starts_with('}') { "" } else { "," };
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{comma}{rest}"
                )
            }
            // Not a JSON object: leave the line as the inner format wrote it.
            None => writer.write_str(&line),
        }
    }
}

/// The trace and span id of the event's innermost span (its explicit parent, else the current
/// span), when that span has a started OpenTelemetry context (any span that was entered).
///
/// The log layer sees every span the trace keeps, whatever `COGNITION_LOG_LEVEL` says (see the
/// filters in [`crate::init`]), so the ids are those of the span the trace shows.
fn ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let span = ctx.event_scope()?.next()?;
    let extensions = span.extensions();
    let data = extensions.get::<OtelData>()?;
    let (trace_id, span_id) = (data.trace_id()?, data.span_id()?);
    if trace_id == opentelemetry::TraceId::INVALID {
        return None;
    }
    Some((trace_id.to_string(), span_id.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use crate::{LogFormat, TelemetryConfig, TraceParent};

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn parsed(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    fn ids(span: &tracing::Span) -> (String, String) {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    }

    /// Without OTLP export, and with a log level above the spans' own, lines in spans still
    /// carry the ids of their innermost span; lines outside spans carry none; a detached span
    /// that adopts a [`TraceParent`] logs its parent's trace id.
    #[test]
    fn json_lines_carry_trace_and_span_ids_without_export() {
        let config = TelemetryConfig {
            log_format: LogFormat::Json,
            log_level: "warn".into(),
            ..TelemetryConfig::default()
        };
        let lines = Lines::default();
        let writer = lines.clone();
        let (subscriber, provider) =
            crate::subscriber("test", &config, move || writer.clone()).unwrap();
        assert!(provider.is_none(), "no exporter when OTLP is disabled");
        let _default = tracing::subscriber::set_default(subscriber);

        tracing::warn!("outside");
        let outer = tracing::info_span!("outer");
        let (outer_ids, inner_ids, parent) = outer.in_scope(|| {
            tracing::warn!(answer = 42, "in outer");
            let inner = tracing::info_span!("inner");
            inner.in_scope(|| tracing::error!("in inner"));
            let parent = TraceParent::current();
            (ids(&outer), ids(&inner), parent)
        });
        let detached = tracing::info_span!(parent: None, "detached");
        parent.adopt(&detached);
        detached.in_scope(|| tracing::warn!("in detached"));
        let detached_ids = ids(&detached);
        tracing::info!("filtered out by the log level");

        let parsed = lines.parsed();
        assert_eq!(parsed.len(), 4, "{parsed:#?}");
        let [outside, in_outer, in_inner, in_detached] = &parsed[..] else {
            unreachable!()
        };
        assert_eq!(outside["message"], "outside");
        assert!(outside.get("trace_id").is_none(), "{outside}");
        assert!(outside.get("span_id").is_none(), "{outside}");

        assert_eq!(in_outer["message"], "in outer");
        assert_eq!(in_outer["answer"], 42);
        assert_eq!(in_outer["trace_id"], outer_ids.0.as_str());
        assert_eq!(in_outer["span_id"], outer_ids.1.as_str());
        assert_eq!(outer_ids.0.len(), 32);
        assert_eq!(outer_ids.1.len(), 16);
        assert_ne!(outer_ids.0, "0".repeat(32));

        assert_eq!(in_inner["trace_id"], outer_ids.0.as_str());
        assert_eq!(in_inner["span_id"], inner_ids.1.as_str());
        assert_ne!(inner_ids.1, outer_ids.1);

        assert_eq!(
            detached_ids.0, outer_ids.0,
            "the adopted span joins the trace"
        );
        assert_eq!(in_detached["trace_id"], outer_ids.0.as_str());
        assert_eq!(in_detached["span_id"], detached_ids.1.as_str());
    }
}
