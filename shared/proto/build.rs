//! Compiles every proto under `proto/` with tonic-prost-build, using the vendored protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        "cognition/common/v1/common.proto",
        "cognition/session/v1/session.proto",
        "cognition/executor/v1/executor.proto",
    ]
    .map(|p| root.join(p));
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .file_descriptor_set_path(out.join("cognition_descriptor.bin"))
        .compile_with_config(config, &protos, &[root])?;
    Ok(())
}
