//! Client-side caching on the node (issue 16): which subscriber read which
//! key, and the invalidations owed to them.
//!
//! A subscriber (the SDK's near cache, a proxy doing `CLIENT TRACKING`)
//! opens an `Invalidations` stream and gets an id; a `Get` carrying that id
//! registers its key here *before* the store is read. When the store
//! changes a registered key (any write, delete, replicated write or
//! catch-up copy: [`Store`](crate::store::Store) calls
//! [`Tracker::changed`] under the shard lock, so before the write is
//! acknowledged), the key is queued once to each subscriber that read it
//! and forgotten, as Redis does: a client that wants to keep tracking reads
//! again.
//!
//! Bounded: at most `max_keys` keys are tracked (split over [`SHARDS`]
//! shards); a full shard drops its oldest key and queues its invalidation
//! first. Each subscriber's queue holds [`QUEUE`] keys; one that falls
//! behind is marked, sent `flush` and its stream ends, so it never misses
//! an invalidation silently. What a subscriber that went away still has in
//! the table leaves it when those keys change or age out.
//!
//! Eviction and TTL expiry send nothing: the value a client holds is then
//! still the latest one written (clients expire their copies by the TTL
//! the read returned), and a later write is still invalidated, since the
//! registration outlives the entry.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use distcache_proto::v1 as pb;
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::sync::{mpsc, watch};
use tonic::Status;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Shards of the tracking table (each its own lock and its own oldest-first
/// order).
pub(crate) const SHARDS: usize = 16;

/// Keys queued to one subscriber before it counts as fallen behind.
pub(crate) const QUEUE: usize = 16 * 1024;

/// Seed for the table's shard hash (unrelated to the store's).
const SEED: u64 = 0x7472_6163_6b69_6e67;

/// One subscriber: where its invalidations go.
#[derive(Debug)]
pub(crate) struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    /// Set when an invalidation did not fit its queue: it gets `flush`.
    behind: AtomicBool,
}

impl Subscriber {
    /// Its id (what reads carry as `tracking_id`).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// True once an invalidation was lost to a full queue.
    pub(crate) fn fell_behind(&self) -> bool {
        self.behind.load(Ordering::Acquire)
    }

    fn send(&self, key: &Bytes) -> bool {
        match self.tx.try_send(key.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.behind.store(true, Ordering::Release);
                false
            }
            // Gone: nothing to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    keys: HashMap<Bytes, SmallVec<[Arc<Subscriber>; 2]>>,
    /// Keys in the order they were first registered; a key already
    /// invalidated may still be here (skipped when it comes up).
    order: VecDeque<Bytes>,
}

/// Counts for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct TrackingStats {
    /// Invalidations queued to subscribers.
    pub(crate) invalidations: AtomicU64,
    /// Keys dropped from a full table (and invalidated).
    pub(crate) evicted: AtomicU64,
    /// Subscribers that fell behind and were flushed.
    pub(crate) flushed: AtomicU64,
}

/// The tracking table of one node.
#[derive(Debug)]
pub(crate) struct Tracker {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Keys tracked now (the fast path of [`Tracker::changed`]: 0 costs a load).
    tracked: AtomicUsize,
    subscribers: Mutex<HashMap<u64, Arc<Subscriber>>>,
    next_id: AtomicU64,
    pub(crate) stats: TrackingStats,
}

impl Tracker {
    /// A table of at most `max_keys` keys (0: tracking off, every
    /// `Invalidations` call is refused).
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_keys.div_ceil(SHARDS),
            tracked: AtomicUsize::new(0),
            subscribers: Mutex::default(),
            // Ids from the start time: a restarted node does not hand out
            // ids its previous incarnation's subscribers still hold.
            next_id: AtomicU64::new(first_id()),
            stats: TrackingStats::default(),
        }
    }

    /// Whether tracking is on.
    pub(crate) fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    /// Keys tracked now.
    pub(crate) fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Subscribers connected now.
    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.lock().len()
    }

    /// A new subscriber and the receiving end of its queue.
    pub(crate) fn subscribe(&self) -> (Arc<Subscriber>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Arc::new(Subscriber {
            id,
            tx,
            behind: AtomicBool::new(false),
        });
        self.subscribers.lock().insert(id, sub.clone());
        (sub, rx)
    }

    /// Its stream ended.
    pub(crate) fn unsubscribe(&self, id: u64) {
        self.subscribers.lock().remove(&id);
    }

    /// Registers `key` for subscriber `id`; false if no such subscriber is
    /// connected (its stream ended, or the node restarted since).
    pub(crate) fn track(&self, key: &Bytes, id: u64) -> bool {
        let Some(sub) = self.subscribers.lock().get(&id).cloned() else {
            return false;
        };
        let mut shard = self.shard(key).lock();
        if let Some(subs) = shard.keys.get_mut(key) {
            if !subs.iter().any(|s| s.id == id) {
                subs.push(sub);
            }
            return true;
        }
        let mut dropped = Vec::new();
        while shard.keys.len() >= self.per_shard {
            let Some(old) = shard.order.pop_front() else {
                break;
            };
            if let Some(subs) = shard.keys.remove(&old) {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
                dropped.push((old, subs));
            }
        }
        shard.keys.insert(key.clone(), smallvec::smallvec![sub]);
        shard.order.push_back(key.clone());
        // Invalidated keys leave stale places in `order`: compact it before
        // it outgrows the table.
        if shard.order.len() > 2 * shard.keys.len() + 64 {
            let Shard { keys, order } = &mut *shard;
            order.retain(|k| keys.contains_key(k));
        }
        drop(shard);
        self.tracked.fetch_add(1, Ordering::Relaxed);
        for (old, subs) in dropped {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            self.notify(&old, &subs);
        }
        true
    }

    /// `key` changed: queues it to every subscriber that read it, and
    /// forgets them.
    pub(crate) fn changed(&self, key: &[u8]) {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some((key, subs)) = self.shard(key).lock().keys.remove_entry(key) else {
            return;
        };
        self.tracked.fetch_sub(1, Ordering::Relaxed);
        self.notify(&key, &subs);
    }

    fn notify(&self, key: &Bytes, subs: &[Arc<Subscriber>]) {
        for s in subs {
            if s.send(key) {
                self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let i = xxh3_64_with_seed(key, SEED) as usize % SHARDS;
        &self.shards[i]
    }
}

/// `/metrics` for the tracking table.
#[derive(Debug)]
pub(crate) struct TrackingCollector(pub(crate) Arc<Tracker>);

impl prometheus_client::collector::Collector for TrackingCollector {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use distcache_serve::metrics::{counter, gauge};
        let t = &self.0;
        gauge(
            &mut enc,
            "tracking_keys",
            "Keys tracked for client-side caching (read by a subscriber, not changed since)",
            t.tracked() as u64,
        )?;
        gauge(
            &mut enc,
            "tracking_subscribers",
            "Invalidations streams open",
            t.subscribers() as u64,
        )?;
        counter(
            &mut enc,
            "invalidations",
            "Invalidations queued to subscribers",
            t.stats.invalidations.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "tracking_evictions",
            "Keys dropped from the full tracking table (and invalidated)",
            t.stats.evicted.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "tracking_flushes",
            "Subscribers that fell behind, were told to flush and disconnected",
            t.stats.flushed.load(Ordering::Relaxed),
        )
    }
}

/// An `Invalidations` answer stream.
pub(crate) type InvalidationStream =
    tokio_stream::wrappers::ReceiverStream<Result<pb::Invalidation, Status>>;

/// Most keys in one `Invalidation` message.
const MESSAGE_KEYS: usize = 1024;

/// Subscribes and returns the stream of its invalidations: first the
/// subscriber id, then the keys queued to it, several per message, until
/// the client goes (the subscription ends with it), the node shuts down
/// (`stop`), or it fell behind (a last `flush` message).
pub(crate) fn stream(
    tracker: Arc<Tracker>,
    mut stop: Option<watch::Receiver<bool>>,
) -> InvalidationStream {
    let (sub, mut keys) = tracker.subscribe();
    let (out, answers) = mpsc::channel(4);
    tokio::spawn(async move {
        let hello = pb::Invalidation {
            subscriber_id: sub.id(),
            ..Default::default()
        };
        if out.send(Ok(hello)).await.is_ok() {
            loop {
                let stopping = async {
                    match &mut stop {
                        Some(s) => {
                            let _ = s.wait_for(|stopped| *stopped).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let first = tokio::select! {
                    k = keys.recv() => k,
                    () = stopping => None,
                    () = out.closed() => None,
                };
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < MESSAGE_KEYS {
                    match keys.try_recv() {
                        Ok(k) => batch.push(k),
                        Err(_) => break,
                    }
                }
                let behind = sub.fell_behind();
                let msg = pb::Invalidation {
                    keys: batch,
                    ..Default::default()
                };
                if out.send(Ok(msg)).await.is_err() {
                    break;
                }
                if behind {
                    tracker.stats.flushed.fetch_add(1, Ordering::Relaxed);
                    let flush = pb::Invalidation {
                        flush: true,
                        ..Default::default()
                    };
                    let _ = out.send(Ok(flush)).await;
                    break;
                }
            }
        }
        tracker.unsubscribe(sub.id());
    });
    tokio_stream::wrappers::ReceiverStream::new(answers)
}

/// The first subscriber id of this process: its start time in
/// microseconds, so never one an earlier incarnation handed out (never 0).
fn first_id() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    micros | 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_change_is_sent_once_to_every_reader_then_forgotten() {
        let t = Tracker::new(1000);
        let (a, mut ra) = t.subscribe();
        let (b, mut rb) = t.subscribe();
        assert!(t.track(&key("k"), a.id()));
        assert!(t.track(&key("k"), b.id()));
        assert!(t.track(&key("k"), b.id()), "twice is once");
        assert!(!t.track(&key("k"), 12345), "unknown subscriber");
        t.changed(b"other");
        t.changed(b"k");
        assert_eq!(ra.try_recv().unwrap(), key("k"));
        assert_eq!(rb.try_recv().unwrap(), key("k"));
        assert!(rb.try_recv().is_err(), "sent once");
        t.changed(b"k");
        assert!(ra.try_recv().is_err(), "forgotten after the change");
        assert_eq!(t.tracked(), 0);
        assert_eq!(t.stats.invalidations.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_full_table_drops_its_oldest_keys_and_invalidates_them() {
        // One key per shard.
        let t = Tracker::new(SHARDS);
        let (a, mut ra) = t.subscribe();
        let mut same_shard = Vec::new();
        for i in 0.. {
            let k = key(&format!("k{i}"));
            if std::ptr::eq(t.shard(&k), t.shard(b"k0")) {
                same_shard.push(k);
                if same_shard.len() == 3 {
                    break;
                }
            }
        }
        for k in &same_shard {
            assert!(t.track(k, a.id()));
        }
        // Each newer key pushed the older one out.
        assert_eq!(ra.try_recv().unwrap(), same_shard[0]);
        assert_eq!(ra.try_recv().unwrap(), same_shard[1]);
        assert!(ra.try_recv().is_err());
        assert_eq!(t.tracked(), 1);
        assert_eq!(t.stats.evicted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_marked() {
        let t = Tracker::new(4 * QUEUE);
        let (a, _ra) = t.subscribe();
        for i in 0..=QUEUE {
            let k = key(&format!("k{i}"));
            assert!(t.track(&k, a.id()));
            t.changed(&k);
        }
        assert!(a.fell_behind());
        t.unsubscribe(a.id());
        assert!(!t.track(&key("x"), a.id()), "gone");
    }
}
