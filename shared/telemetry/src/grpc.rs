//! W3C trace context on gRPC hops.
//!
//! Servers: `Server::builder().layer(ServerTraceLayer::default())` opens a `grpc.server` span per
//! call whose parent is the caller's `traceparent`. Clients: wrap the channel with
//! `FooClient::with_interceptor(channel, InjectTraceContext)`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A tonic interceptor that injects the current span's trace context into request metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct InjectTraceContext;

impl tonic::service::Interceptor for InjectTraceContext {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut MetadataInjector(req.metadata_mut()))
        });
        Ok(req)
    }
}

/// A channel with trace-context injection, as used by every internal gRPC client.
pub type TracedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, InjectTraceContext>;

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Reads trace context from HTTP headers (gRPC metadata are HTTP/2 headers).
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Injects the current span's context into outgoing HTTP headers (used by the gateway's own
/// HTTP calls and by tests).
pub fn inject_headers(headers: &mut http::HeaderMap) {
    struct H<'a>(&'a mut http::HeaderMap);
    impl Injector for H<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(k, v);
            }
        }
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut H(headers)));
}

/// Makes `span` a child of the trace context found in `headers`, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
}

/// Tower layer for tonic servers: one span per call, parented to the caller's trace context.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!(
            "grpc.server",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %req.uri().path(),
        );
        set_parent_from_headers(&span, req.headers());
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(fut.instrument(span))
    }
}
