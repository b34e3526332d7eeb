//! What Tallow's tests share, so each test file states its case and not
//! its plumbing:
//!
//! * [`process`]: the real-process harness (relay, sender, receiver and a
//!   hostile hop as separate processes on 127.0.0.1, trees to compare,
//!   memory to poll), every wait with a deadline;
//! * [`messages`]: the messages a scripted (honest or hostile) peer sends;
//! * [`memory`]: an in-memory connection carrying plaintext frames between
//!   two pipelines;
//! * [`proxy`]: SOCKS5 and HTTP CONNECT proxies for clients to go through;
//! * [`sim`]: whole transfers through the protocol's machines on a
//!   simulated link, with a clock the simulation advances.
//!
//! Used by the crates' tests; never by the tools themselves.

pub mod memory;
pub mod messages;
pub mod process;
pub mod proxy;
pub mod sim;
