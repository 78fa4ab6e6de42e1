//! The bodies of the proxy's fuzz targets (`fuzz/`), here so that the
//! normal test suite can replay their corpora on stable Rust. Not an API.
//!
//! - [`resp_request`]: the RESP2 request parser, multibulk and inline.
//! - [`resp_command`]: arguments → `Command`, with a model of SET's and
//!   EXPIRE's options.
//! - [`membership_file`], [`membership_http`]: the cluster file (TOML) and
//!   the HTTP discovery answer (JSON), and `--discovery` values.
//!
//! Each panics when an oracle is violated; that is how libFuzzer sees it.

mod command;
mod membership;
mod resp;

pub use command::resp_command;
pub use membership::{membership_file, membership_http};
pub use resp::resp_request;
