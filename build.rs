//! Compiles the Sparkplug B payload schema (src/sparkplug/proto) into Rust
//! with prost-build, from a descriptor set made by protox: pure Rust, no
//! system `protoc`, so native and ARM cross builds need nothing extra.
//! Owns only code generation; the generated file lands in OUT_DIR and is
//! included by `src/sparkplug/payload.rs`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "src/sparkplug/proto";
    let file = "src/sparkplug/proto/sparkplug_b.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], [dir])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
