//! Generates the Rust types of `proto/kite/p2p.proto`; the data types it
//! imports come from `kite_types::proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.extern_path(".kite.types", "::kite_types::proto");
    config.compile_protos(&["proto/kite/p2p.proto"], &["proto", "../types/proto"])?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=../types/proto");
    Ok(())
}
