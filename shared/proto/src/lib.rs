//! Generated protobuf and gRPC code for every Cognition API (`proto/cognition/**`).
//!
//! Used by every service and by the test harness. Client and server halves sit behind the
//! `client` and `server` features. Nothing but generated code and tiny conversion helpers
//! belongs here: wire types stay at the edges of the services.

#![allow(clippy::all, missing_docs)]

pub mod common {
    pub mod v1 {
        tonic::include_proto!("cognition.common.v1");
    }
}

pub mod session {
    pub mod v1 {
        tonic::include_proto!("cognition.session.v1");
    }
}

pub mod executor {
    pub mod v1 {
        tonic::include_proto!("cognition.executor.v1");
    }
}

pub mod scope;

/// File descriptor set of every Cognition proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cognition_descriptor");

/// Converts a `SystemTime`-like instant to a protobuf timestamp.
pub fn timestamp(secs: i64, nanos: u32) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: nanos as i32,
    }
}

/// The wire form of an error code: `ERROR_CODE_<NAME>` ↔ the code string `<NAME>` of the shared
/// error table (`cognition_errors::Code::as_str`). Matching by name keeps the proto enum and the
/// table from drifting apart without a second hand-written mapping.
pub mod error_code {
    use super::common::v1::ErrorCode;

    /// `ErrorCode` value → code string (`None` for UNSPECIFIED or unknown values).
    pub fn name(value: i32) -> Option<&'static str> {
        let code = ErrorCode::try_from(value).ok()?;
        code.as_str_name()
            .strip_prefix("ERROR_CODE_")
            .filter(|n| *n != "UNSPECIFIED")
    }

    /// Code string → `ErrorCode` (UNSPECIFIED when the proto has no such code).
    pub fn from_name(name: &str) -> ErrorCode {
        ErrorCode::from_str_name(&format!("ERROR_CODE_{name}")).unwrap_or(ErrorCode::Unspecified)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_by_name() {
            assert_eq!(
                name(ErrorCode::SessionNotFound as i32),
                Some("SESSION_NOT_FOUND")
            );
            assert_eq!(from_name("ABORTED"), ErrorCode::Aborted);
            assert_eq!(name(ErrorCode::Unspecified as i32), None);
            assert_eq!(name(999), None);
            assert_eq!(from_name("NO_SUCH_CODE"), ErrorCode::Unspecified);
        }
    }
}

/// The gRPC server reflection service of a Cognition server that serves `service` (e.g.
/// `cognition.session.v1.SessionService`): it advertises that service, `grpc.health.v1.Health`
/// and reflection itself — and not the other Cognition services whose descriptors share the set.
#[cfg(feature = "server")]
pub fn reflection_service(
    service: &str,
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
}
