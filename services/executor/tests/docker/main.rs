//! The Docker backend against the real Docker engine: a real executor on 127.0.0.1:0 with
//! `COGNITION_SANDBOX_BACKEND=docker`, real containers of `cognition-sandbox:latest`.
//!
//! Only what is Docker's own lives here (hardening, isolation, the image, re-adoption, the agent,
//! the warm pool); the behaviour every backend shares (Exec, PTYs, files) is the `executor` test
//! binary's suite, which runs each test on the local and the Docker backend.
//!
//! These tests run whenever the Docker engine answers, and FAIL under `CI` (or
//! `COGNITION_TEST_DOCKER`) when it does not or the image cannot be built (it is built with
//! `compose/sandbox/build.sh` when missing or stale); without `CI`, an engine that does not
//! answer makes each test print why it is skipped and pass. Every test has its own sandbox root,
//! which the backend writes into a label, so tests count exactly their own containers: before and
//! after must both be zero (nothing leaks).

#[allow(dead_code)]
#[path = "../executor/support.rs"]
mod support;

mod harness;

mod agent;
mod image;
mod isolation;
mod lifecycle;
mod warm;
