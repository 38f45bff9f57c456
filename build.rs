//! Compiles proto/tessera/v1 with protox (pure Rust, no protoc on the machines) and
//! tonic-prost-build, and writes the descriptor set served by gRPC reflection.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/tessera/v1/tessera.proto"];
    println!("cargo:rerun-if-changed=proto");
    // Release builds read this profile (.cargo/rustc-pgo); Cargo does not track it, so a new one
    // at least recompiles this crate, where most of the hot generic code is instantiated.
    println!("cargo:rerun-if-changed=.cargo/tessera.profdata");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("tessera_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
