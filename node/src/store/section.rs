//! The `[store]` section of the node's TOML file: the store's bounds and
//! the sweeper's pace. Data only; [`StoreSection::store_config`] gives the
//! store its own part.

use std::time::Duration;

use distcache_serve::units::{ByteSize, HumanDuration};
use serde::Deserialize;

use super::{DEFAULT_MAX_MEMORY, DEFAULT_SHARDS, DEFAULT_TOMBSTONE_TTL_MS, StoreConfig};

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
