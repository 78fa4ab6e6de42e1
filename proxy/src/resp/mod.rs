//! The Redis-protocol front end: RESP2 on every connection, RESP3 on those
//! that say `HELLO 3` (`session`), one reply tree written for either
//! (`codec`).

pub mod auth;
pub mod codec;
pub mod command;
pub mod exec;
pub mod output;
pub mod per_ip;
pub mod server;
mod session;

pub use codec::{Limits, Protocol, ProtocolError, Reply, RequestParser, parse_request};
