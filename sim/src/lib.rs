//! The simulator, evaluation harness, training pipeline and drills of stockgrid.
//!
//! This crate will own a deterministic (seeded) simulation of a retail network that knows
//! the true stock, the evaluation of answers against that truth, the training of the models
//! of `stockgrid-inference`, and drills against a real node through the `stockgrid-api`
//! client. It may depend on every library crate (`api`, `cluster`, `actors`, `inference`);
//! nothing but the binary depends on it.
//!
//! # Layout
//! - [`demo`]: `stockgrid demo`, a simulated store day through a real node's gRPC API.
//! - [`loadgen`]: `stockgrid loadgen`, open- and closed-loop load against a node.

//!
//! The simulator proper comes with the simulator issue; the replay file formats it will
//! write are read today by `stockgrid_actors::replay`.

pub mod demo;
pub mod loadgen;
mod requests;
