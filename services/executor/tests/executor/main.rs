//! Integration tests: a real executor on 127.0.0.1:0, real processes, a tempdir sandbox root.

mod support;

mod exec;
mod files;
mod sandboxes;
