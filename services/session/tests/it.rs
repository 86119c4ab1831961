//! Integration tests of the session service: the store suite (SQLite and PostgreSQL), the gRPC
//! service on a real tonic server, and agent runs end to end (fake LLM, real executor).

mod it {
    pub mod fake_executor;
    pub mod grpc;
    pub mod run_store;
    pub mod runs;
    pub mod runs_support;
    pub mod store_suite;
    pub mod support;
}
