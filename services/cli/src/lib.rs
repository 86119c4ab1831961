//! The `cognition` command's library: the all-in-one launcher ([`stack`]) used by
//! `cognition up` and by the test harness, so both start the platform the same way, and the
//! terminal chat client ([`chat`]).
//!
//! Nothing service-specific lives here: each service keeps its own `run` and config; this crate
//! only wires their addresses together.

pub mod chat;
pub mod stack;
