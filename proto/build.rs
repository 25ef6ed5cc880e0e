//! Compiles the strata `.proto` files with `protox` (pure Rust, no `protoc`
//! needed) and generates prost messages plus tonic clients and servers.

use std::error::Error;
use std::path::{Path, PathBuf};

/// Proto files to compile, relative to the `proto/` crate directory.
const PROTOS: &[&str] = &[
    "strata/common/v1/common.proto",
    "strata/common/v1/context.proto",
    "strata/build/v1/types.proto",
    "strata/build/v1/events.proto",
    "strata/build/v1/images.proto",
    "strata/build/v1/build.proto",
    "strata/worker/v1/job.proto",
    "strata/worker/v1/worker.proto",
];

/// Messages whose `Debug` impl is written by hand (in `src/lib.rs`) so that
/// sensitive values are redacted.
const REDACTED_DEBUG: &[&str] = &[".strata.common.v1.Secret", ".strata.common.v1.RegistryAuth"];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed={}", root.join("strata").display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    let mut compiler = protox::Compiler::new([root.as_path()])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS.iter().map(Path::new))?;

    // Full set including google/protobuf imports: what gRPC reflection needs.
    std::fs::write(
        out_dir.join("strata_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The generated `XxxClient::connect(endpoint)` constructor would clash
        // with the `WorkerService.Connect` rpc method; clients are built with
        // `XxxClient::new(channel)` instead.
        .build_transport(false)
        .skip_debug(REDACTED_DEBUG.iter().copied())
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
