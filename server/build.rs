//! Compiles the public API (`proto/causeway/v1`) into server stubs, with a file descriptor set
//! for gRPC reflection (with the google.rpc error details a status carries), and the
//! node-to-node API (`proto/causeway/cluster/v1`) into client and server stubs (a node is both).
//! `protox` is a protobuf compiler written in Rust, so no `protoc` binary is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // As `protoc --include_imports --include_source_info` would: the imports (the well-known
    // types error details use) make the set self-contained for reflection, and the source
    // info carries the comments into the generated code and into what reflection serves.
    let mut public = protox::Compiler::new(["../proto"])?;
    public.include_imports(true).include_source_info(true);
    public.open_files([
        "causeway/v1/causeway.proto",
        "causeway/v1/cluster.proto",
        "causeway/v1/operations.proto",
        // Not used in code (tonic-types has them); compiled into the descriptor set so
        // reflection can describe the error details a status carries.
        "google/rpc/error_details.proto",
    ])?;
    std::fs::write(
        out_dir.join("causeway_descriptor.bin"),
        public.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        // What `compile_protos` adds by itself and `compile_fds` does not: generated code is
        // not ours to lint.
        .type_attribute(".", "#[allow(clippy::all)]")
        // google.rpc.Status, in the answers of AppendStream.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        // The core keeps metadata sorted (it is hashed in key order), so decode it that way.
        .btree_map(".")
        // Payloads as `Bytes`: a decoded payload is a slice of the request's buffer, not a
        // copy, and the core keeps it that way until the event is written and answered.
        .bytes(".causeway.v1.NewEvent.payload")
        .bytes(".causeway.v1.Event.payload")
        // Events streamed or paged from the log or an entity are encoded straight from the
        // stored records (`src/wire.rs`).
        .extern_path(".causeway.v1.EventBatch", "crate::wire::EventBatch")
        .extern_path(
            ".causeway.v1.ReadLogResponse",
            "crate::wire::ReadLogResponse",
        )
        .extern_path(
            ".causeway.v1.ReadEntityResponse",
            "crate::wire::ReadEntityResponse",
        )
        .compile_fds(public.file_descriptor_set())?;

    let cluster = protox::compile(["causeway/cluster/v1/raft.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[allow(clippy::all)]")
        // Entries and snapshot chunks as `Bytes`: slices of the message, not copies.
        .bytes(".causeway.cluster.v1")
        .compile_fds(cluster)?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
