//! How the store is sized ([`StoreConfig`], its defaults) and the `[store]`
//! section of the node's TOML file it is read from (the store's bounds and
//! the sweeper's pace). Data only; a leaf of the store folder.

use std::time::Duration;

use distcache_serve::units::{ByteSize, HumanDuration};
use serde::Deserialize;

/// Default number of shards.
pub const DEFAULT_SHARDS: usize = 256;
/// Default memory bound: 1 GiB.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;
/// Default time a tombstone is kept: 5 minutes.
pub const DEFAULT_TOMBSTONE_TTL_MS: u64 = 5 * 60 * 1000;

/// How the store is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Number of shards; a power of two between 1 and 65536.
    pub shards: usize,
    /// Bound on the bytes charged to entries (keys, values, overhead).
    pub max_memory: u64,
    /// How long, in milliseconds, a tombstone blocks older replicated writes.
    pub tombstone_ttl_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            shards: DEFAULT_SHARDS,
            max_memory: DEFAULT_MAX_MEMORY,
            tombstone_ttl_ms: DEFAULT_TOMBSTONE_TTL_MS,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Bound on memory charged to entries; least recently used entries are
    /// evicted beyond it.
    pub max_memory: ByteSize,
    /// Number of shards (a power of two).
    pub shards: usize,
    /// How long a tombstone blocks older replicated writes after a delete.
    pub tombstone_ttl: HumanDuration,
    /// How often the sweeper reclaims expired entries.
    pub sweep_interval: HumanDuration,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            max_memory: ByteSize(DEFAULT_MAX_MEMORY),
            shards: DEFAULT_SHARDS,
            tombstone_ttl: HumanDuration(Duration::from_millis(DEFAULT_TOMBSTONE_TTL_MS)),
            sweep_interval: HumanDuration(Duration::from_millis(100)),
        }
    }
}

impl StoreSection {
    /// The store's part of the section.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            shards: self.shards,
            max_memory: self.max_memory.0,
            tombstone_ttl_ms: u64::try_from(self.tombstone_ttl.0.as_millis()).unwrap_or(u64::MAX),
        }
    }
}
