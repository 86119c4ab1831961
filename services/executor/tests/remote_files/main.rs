//! `RemoteFiles` (file operations done by shell scripts in the sandbox) against real processes:
//! a local-backend sandbox in a tempdir, whose processes run the scripts. Every case runs twice:
//! with the host's GNU tools, and with BusyBox only (the Docker sandbox image's toolset: `PATH`
//! holds nothing but BusyBox applets). Results are compared with `LocalFiles` on the same
//! workspace wherever both must agree.
//!
//! The BusyBox variants need `busybox` on the host (Debian: `busybox-static`); without it they
//! print why and pass, unless `CI` is set, where they fail.

mod harness;

mod failures;
mod listings;
mod safety;
mod text;
mod transfer;
