//! The Redis-protocol front end's wire format.

pub mod auth;
pub mod codec;
pub mod command;
pub mod exec;
pub mod output;
pub mod per_ip;
pub mod server;
mod session;

pub use codec::{Limits, ProtocolError, Reply, parse_request};
