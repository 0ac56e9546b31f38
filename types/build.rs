//! Generates the Rust types of `proto/kite/types.proto` with prost-build,
//! using the vendored `protoc` (no system protoc is needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.compile_protos(&["proto/kite/types.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
