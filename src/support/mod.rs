//! The floor: small helpers every layer uses and that know nothing of the
//! product (no config, no storage, no error of ours): hex and random
//! tokens, a bounded sharded map, a wake-up notifier.
//!
//! Nothing here imports another module of this crate; a test in
//! `tests/api/architecture.rs` holds every module to its tier.

pub mod bounded;
pub mod notify;
pub mod sealed;
pub mod token;
