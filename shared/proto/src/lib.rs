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
    prost_types::Timestamp { seconds: secs, nanos: nanos as i32 }
}
