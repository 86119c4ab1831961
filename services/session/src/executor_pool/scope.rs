//! The session's scope on executor calls: a client bound to a scope sends it as
//! `x-cognition-scope-<key>` metadata on every call (unary and streaming), next to the trace
//! context. The executor checks it against the sandbox's `cognition.io/<key>` labels, stamps it
//! on the sandboxes it creates and narrows listings to it (`PERMISSION_DENIED` on a mismatch),
//! so a bug on this side cannot reach another tenant's sandbox. An empty scope (scoping off)
//! sends nothing.

use cognition_proto::executor::v1::executor_service_client::ExecutorServiceClient;
use cognition_proto::scope::Scope;
use cognition_telemetry::grpc::{InjectTraceContext, TracedChannel};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client of one executor replica that acts for one scope.
pub type ScopedExecutorClient =
    ExecutorServiceClient<InterceptedService<TracedChannel, ScopeMetadata>>;

/// Adds a scope's metadata to every outgoing call.
#[derive(Debug, Clone)]
pub struct ScopeMetadata(Scope);

impl Interceptor for ScopeMetadata {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.insert_into(request.metadata_mut());
        Ok(request)
    }
}

/// A client on `channel` acting for `scope` (traced like every other executor call).
pub fn scoped_client(channel: Channel, scope: &Scope) -> ScopedExecutorClient {
    let traced = InterceptedService::new(channel, InjectTraceContext);
    ExecutorServiceClient::new(InterceptedService::new(
        traced,
        ScopeMetadata(scope.clone()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_key_becomes_metadata() {
        let mut scope = Scope::default();
        scope.0.insert("user".into(), "alice".into());
        scope.0.insert("org".into(), "acme".into());
        let request = ScopeMetadata(scope)
            .call(tonic::Request::new(()))
            .expect("intercepted");
        let md = request.metadata();
        assert_eq!(md.get("x-cognition-scope-user").unwrap(), "alice");
        assert_eq!(md.get("x-cognition-scope-org").unwrap(), "acme");
        let unscoped = ScopeMetadata(Scope::default())
            .call(tonic::Request::new(()))
            .expect("intercepted");
        assert!(unscoped.metadata().is_empty());
    }
}
