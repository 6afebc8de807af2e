//! causewayd.

/// The generated protobuf types and gRPC server of `causeway.v1`.
pub mod pb {
    #![allow(missing_docs)]
    tonic::include_proto!("causeway.v1");
    /// The file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("causeway_descriptor");
}

fn main() {}
