//! End-to-end tests of stockgrid: real processes, real stores on disk, real sockets.
//!
//! The tests live in `tests/tests/`; this library holds only helpers they share. Nothing
//! depends on this crate.
