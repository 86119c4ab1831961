//! W3C trace context crosses a gRPC hop: the client interceptor injects `traceparent` from the
//! current span, and the server layer opens its span as a child of that context.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use cognition_telemetry::grpc::{InjectTraceContext, ServerTraceLayer};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use tonic::service::Interceptor as _;
use tower::{Layer as _, Service as _, ServiceExt as _};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test]
async fn trace_context_survives_a_grpc_hop() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    // Client side: a span with a trace id, and the interceptor.
    let client_span = tracing::info_span!("client");
    let client_trace = client_span.context().span().span_context().trace_id();
    let request =
        client_span.in_scope(|| InjectTraceContext.call(tonic::Request::new(())).unwrap());
    let traceparent = request
        .metadata()
        .get("traceparent")
        .expect("traceparent injected")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        traceparent.contains(&client_trace.to_string()),
        "{traceparent} vs {client_trace}"
    );

    // Server side: the layer's span must belong to the same trace.
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    let inner = tower::service_fn(move |_req: http::Request<()>| {
        let seen = seen2.clone();
        async move {
            let cx = tracing::Span::current().context();
            *seen.lock().unwrap() = Some(cx.span().span_context().trace_id());
            Ok::<_, Infallible>(http::Response::new(()))
        }
    });
    let mut svc = ServerTraceLayer.layer(inner);
    let http_req = http::Request::builder()
        .uri("/cognition.session.v1.SessionService/GetSession")
        .header("traceparent", traceparent)
        .body(())
        .unwrap();
    svc.ready().await.unwrap().call(http_req).await.unwrap();
    assert_eq!(seen.lock().unwrap().expect("server span ran"), client_trace);
}
