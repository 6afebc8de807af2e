//! `causeway-client`: talk to a Causeway server.

/// The generated protobuf types and gRPC client of `causeway.v1`.
pub mod pb {
    #![allow(missing_docs)]
    tonic::include_proto!("causeway.v1");
}
