//! The Docker backend against the real Docker engine: a real executor on 127.0.0.1:0 with
//! `COGNITION_SANDBOX_BACKEND=docker`, real containers of `cognition-sandbox:latest`.
//!
//! These tests run when `CI` (or `COGNITION_TEST_DOCKER`) is set and then FAIL if Docker or the
//! image is unavailable (the image is built with `compose/sandbox/build.sh` when missing);
//! otherwise each test prints why it is skipped and passes. Every test has its own sandbox root,
//! which the backend writes into a label, so tests count exactly their own containers: before and
//! after must both be zero (nothing leaks).

#[allow(dead_code)]
#[path = "../executor/support.rs"]
mod support;

mod harness;

mod exec;
mod image;
mod isolation;
mod lifecycle;
mod warm;
