//! What Tallow's tests share, so each test file states its case and not
//! its plumbing: builders for the messages a scripted (honest or hostile)
//! peer sends, and an in-memory connection that carries plaintext frames
//! between two pipelines. Used by `tallow-transfer`'s and `tallow`'s tests;
//! never by the tools themselves. The process harness (relay, sender and
//! receiver as real processes) stays with the binary's tests in
//! `crates/tallow/tests/harness`, as it needs the binary Cargo builds there.

pub mod memory;
pub mod messages;
pub mod sim;
