//! The public gRPC API of stockgrid.
//!
//! This crate owns the protos (`proto/stockgrid/v1`, package `stockgrid.v1`), the generated
//! server and client code ([`proto`]), the tonic services, and the mapping of every internal
//! error to a `tonic::Status`. It may depend on `stockgrid-cluster` and `stockgrid-actors`,
//! never on `stockgrid-sim` or the binary.

/// Code generated from the protos at build time (vendored protoc), server and client.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod proto {
    /// Package `stockgrid.v1`.
    pub mod v1 {
        tonic::include_proto!("stockgrid.v1");
    }

    /// The encoded descriptor set of every stockgrid proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("stockgrid_descriptor");
}
