//! Why a membership source gave no usable node list: one error type for
//! every source, a leaf the source files share.

use std::path::PathBuf;

/// Why a source gave no usable node list.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The `--discovery` value is not one the proxy understands.
    #[error("bad discovery source {0}")]
    BadSource(String),
    /// The cluster file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster file is not valid.
    #[error("invalid cluster file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The DNS lookup failed.
    #[error("cannot resolve {name}: {reason}")]
    Dns {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The nodes' names do not make a membership: two nodes under one name,
    /// one address under two names, or a name that cannot name a node.
    #[error("cannot name the nodes: {0}")]
    Naming(String),
    /// The HTTP request failed or was answered with an error status.
    #[error("GET {uri} failed: {reason}")]
    Http {
        /// The URL.
        uri: String,
        /// Why.
        reason: String,
    },
    /// The HTTP answer is neither a Consul health list nor a URL list.
    #[error("unexpected answer: {0}")]
    Answer(String),
    /// The source named no node.
    #[error("the source lists no node")]
    Empty,
    /// The source named more nodes than [`MAX_NODES`](super::MAX_NODES).
    #[error("the source lists {0} nodes or more; at most {max} are allowed", max = distcache::MAX_NODES)]
    TooMany(usize),
}
