//! A trace carried into a detached task.
//!
//! A task spawned from a request handler starts with no current span, so its spans would begin
//! a new trace. [`TraceParent::current`] captures the handler's trace context before spawning;
//! [`TraceParent::adopt`] makes a span opened in the task an OpenTelemetry child of it. Only the
//! OpenTelemetry parent is set, not the `tracing` one: the handler's span still ends when the
//! handler does, instead of being held open by a child that outlives it.

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The trace context of the span that was current when it was captured.
#[derive(Debug, Clone, Default)]
pub struct TraceParent(opentelemetry::Context);

impl TraceParent {
    /// The current span's trace context (empty outside any span: adopting it changes nothing).
    pub fn current() -> TraceParent {
        TraceParent(tracing::Span::current().context())
    }

    /// Makes `span` a child of this context. Call it before `span` is first entered.
    pub fn adopt(&self, span: &tracing::Span) {
        use opentelemetry::trace::TraceContextExt as _;
        if self.0.span().span_context().is_valid() {
            let _ = span.set_parent(self.0.clone());
        }
    }
}
