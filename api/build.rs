//! Compiles the public protos with the vendored protoc (no system protoc needed) and writes
//! the descriptor set that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/stockgrid/v1/common.proto",
    "proto/stockgrid/v1/availability.proto",
    "proto/stockgrid/v1/ingest.proto",
    "proto/stockgrid/v1/reservations.proto",
    "proto/stockgrid/v1/catalog.proto",
    "proto/stockgrid/v1/inspect.proto",
    "proto/stockgrid/v1/admin.proto",
    "proto/stockgrid/v1/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("stockgrid_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["proto"])?;
    Ok(())
}
