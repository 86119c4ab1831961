//! Integration tests: a real executor on 127.0.0.1:0, real processes, a tempdir sandbox root.
//! (`kubernetes` checks the Kubernetes backend's API requests and startup checks on a fake API.)
//!
//! The Exec, PTY and file-operation suites run against every backend from one body
//! ([`backend::on_every_backend!`]): `<suite>::local::<test>` on host processes and
//! `<suite>::docker::<test>` on real containers of `cognition-sandbox:latest` (built with
//! `compose/sandbox/build.sh` when missing). A Docker variant skips, saying why, only when `CI` is
//! unset and the engine does not answer; under `CI` it must run. `sandboxes` is local-only (the
//! Docker lifecycle lives in the `docker` test binary).

mod support;

#[allow(dead_code)]
#[path = "../docker/harness.rs"]
mod harness;

mod backend;
mod fake_k8s;
mod kubernetes;

mod exec;
mod files;
mod pty;
mod sandboxes;
mod tenancy;
