//! The public gRPC API of stockgrid.
//!
//! This crate will own the protos (`proto/stockgrid/v1`), the generated server and client
//! code, the tonic services, authentication and the mapping of every internal error to a
//! `tonic::Status` in one function. It may depend on `stockgrid-cluster` and
//! `stockgrid-actors`, never on `stockgrid-sim` or the binary.
//!
//! # Layout
//! Empty until the service issue: today the engine is driven by `stockgrid replay`.
