//! Compiles the public API (`proto/causeway/v1`) into client stubs. `protox` is a protobuf
//! compiler written in Rust, so no `protoc` binary is needed. The protos come from `proto/` in
//! this package, a link to the workspace's `proto/` that `cargo package` copies as files, so
//! the published crate builds on its own.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = protox::compile(
        [
            "causeway/v1/causeway.proto",
            "causeway/v1/cluster.proto",
            "causeway/v1/operations.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_server(false)
        // What `compile_protos` adds by itself and `compile_fds` does not: generated code is
        // not ours to lint.
        .type_attribute(".", "#[allow(clippy::all)]")
        // google.rpc.Status, in the answers of AppendStream.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        // prost's codec, decoding each message from one slice (`src/codec.rs`).
        .codec_path("crate::codec::SliceCodec")
        .compile_fds(files)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
