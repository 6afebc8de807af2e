//! Compiles the public API (`proto/causeway/v1`) into client stubs. Uses the vendored `protoc`,
//! so no system install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(
            config,
            &[
                "../proto/causeway/v1/causeway.proto",
                "../proto/causeway/v1/cluster.proto",
                "../proto/causeway/v1/operations.proto",
            ],
            &["../proto"],
        )?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
