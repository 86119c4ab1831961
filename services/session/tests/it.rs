//! Integration tests of the session service: the store suite (SQLite and PostgreSQL) and the
//! gRPC service on a real tonic server.

mod it {
    pub mod fake_executor;
    pub mod grpc;
    pub mod store_suite;
    pub mod support;
}
