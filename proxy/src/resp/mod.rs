//! The Redis-protocol front end's wire format.

pub mod codec;
pub mod command;

pub use codec::{Limits, ProtocolError, Reply, parse_request};
