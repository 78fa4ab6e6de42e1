//! The sweeper: a background task that reclaims expired entries from the
//! store a slice of a shard at a time, so no shard lock is held long. It
//! sits beside the store because the store is synchronous and knows no
//! tokio; this is the store's only task.

use std::sync::Arc;
use std::time::Duration;

use distcache_serve::stopped;
use tokio::sync::watch;

use crate::admin::Probes;
use crate::store::Store;

/// Reclaims expired entries a slice at a time so no shard lock is held long;
/// each round over every shard is a heartbeat for `/livez`.
pub(crate) async fn sweep(
    store: Arc<Store>,
    every: Duration,
    probes: Arc<Probes>,
    mut stop: watch::Receiver<bool>,
) {
    const SLOTS_PER_SHARD: usize = 64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        let removed: u64 = (0..store.shard_count())
            .map(|i| store.sweep_shard(i, SLOTS_PER_SHARD))
            .sum();
        probes.beat();
        if removed > 0 {
            tracing::trace!(removed, "swept expired entries");
        }
    }
}
