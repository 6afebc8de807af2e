//! Compiles the public API (`proto/causeway/v1`) into server stubs, with a file descriptor set
//! for gRPC reflection (with the google.rpc error details a status carries), and the node-to-node API (`proto/causeway/cluster/v1`) into client and
//! server stubs (a node is both). Uses the vendored `protoc`, so no system install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        // The core keeps metadata sorted (it is hashed in key order), so decode it that way.
        .btree_map(".")
        // Payloads as `Bytes`: a decoded payload is a slice of the request's buffer, not a
        // copy, and the core keeps it that way until the event is written and answered.
        .bytes(".causeway.v1.NewEvent.payload")
        .bytes(".causeway.v1.Event.payload")
        .file_descriptor_set_path(out_dir.join("causeway_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                "../proto/causeway/v1/causeway.proto",
                "../proto/causeway/v1/cluster.proto",
                "../proto/causeway/v1/operations.proto",
                // Not used in code (tonic-types has them); compiled into the descriptor set so
                // reflection can describe the error details a status carries.
                "../proto/google/rpc/error_details.proto",
            ],
            &["../proto"],
        )?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // Entries and snapshot chunks as `Bytes`: slices of the message, not copies.
        .bytes(".causeway.cluster.v1")
        .compile_with_config(
            config,
            &["../proto/causeway/cluster/v1/raft.proto"],
            &["../proto"],
        )?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
