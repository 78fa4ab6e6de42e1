//! The public [`Client`]: typed operations over the replicated cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use distcache_proto::trace::TraceContext;
use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{ClientConfig, CoalesceConfig, Consistency, RebalanceConfig, RetryConfig};
use crate::deadline::{request_deadline, within};
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::replica::{Inner, Stats, View, mismatched};
use crate::retry::Retrier;
use crate::ring::Ring;
use crate::topology::{Membership, MembershipChange, Topology};
use crate::types::{ClientStats, Condition, Entry, WriteOutcome};

#[derive(Debug, Clone, Default)]
struct Overrides {
    read: Option<Consistency>,
    write: Option<Consistency>,
    timeout: Option<Duration>,
    /// Shared, so that an operation hands it to its RPCs without a copy.
    trace: Option<Arc<TraceContext>>,
}

/// A handle on a distcache cluster. Cheap to clone; clones share
/// connections, health and the version clock.
///
/// ```no_run
/// # async fn demo() -> Result<(), distcache::Error> {
/// use std::time::Duration;
/// use distcache::{Client, Consistency};
///
/// let cache = Client::builder()
///     .nodes(["http://10.0.0.1:7001", "http://10.0.0.2:7001", "http://10.0.0.3:7001"])
///     .replicas(2)
///     .write_consistency(Consistency::Quorum)
///     .build()
///     .await?;
/// cache.set("user:123", r#"{"name":"Alice"}"#, Some(Duration::from_secs(60))).await?;
/// if let Some(entry) = cache.get("user:123").await? {
///     println!("{:?} v{} ttl {:?}", entry.value, entry.version, entry.ttl);
/// }
/// // Per-request overrides: a strongly consistent read with a short deadline.
/// let fresh = cache
///     .with_read_consistency(Consistency::All)
///     .with_timeout(Duration::from_millis(200))
///     .get("user:123")
///     .await?;
/// # let _ = fresh; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    overrides: Overrides,
}

fn ttl_ms(ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(d) => (d.as_millis() as u64).max(1),
    }
}

fn key_bytes(key: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(key.as_ref())
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn from_config(mut config: ClientConfig) -> Result<Self> {
        // A slot of its own: clients built from clones of one config do
        // not share a token that `set_token` changes.
        config.token_slot = crate::config::TokenSlot::new(config.token.as_deref())?;
        let members = crate::topology::parse_members(&config.nodes, &config)?;
        let topology = Topology::build(&members, &config, None)?;
        let inner = Arc::new(Inner {
            clock: Hlc::default(),
            client_id: random_id(),
            retry: Retrier::new(config.retry.clone()),
            stats: Stats::default(),
            prober: std::sync::Mutex::new(None),
            flights: crate::load::Flights::default(),
            members: Membership::new(topology),
            near: (config.near_cache_bytes > 0)
                .then(|| Arc::new(crate::near::NearCache::new(config.near_cache_bytes))),
            near_tasks: std::sync::Mutex::new(Vec::new()),
            config,
        });
        if inner.near.is_some() {
            let handle = tokio::spawn(near_loop(Arc::downgrade(&inner)));
            if let Ok(mut t) = inner.near_tasks.lock() {
                t.push(handle);
            }
        }
        if !inner.config.probe_interval.is_zero() {
            let handle = tokio::spawn(probe_loop(Arc::downgrade(&inner)));
            if let Ok(mut p) = inner.prober.lock() {
                *p = Some(handle);
            }
        }
        Ok(Self {
            inner,
            overrides: Overrides::default(),
        })
    }

    /// Waits (see [`ClientBuilder::build`]) for the first probe round and
    /// the catch-ups it started.
    async fn settle(&self) {
        let i = &self.inner;
        if i.config.probe_interval.is_zero() {
            return;
        }
        let until = Instant::now() + i.config.timeout;
        while Instant::now() < until {
            let probed = i.stats.probe_rounds.load(Ordering::Acquire) > 0;
            let settling = i
                .members
                .load()
                .nodes
                .iter()
                .any(|n| n.is_healthy() && n.is_fenced());
            if probed && !settling {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A handle whose requests use read consistency `c`.
    pub fn with_read_consistency(&self, c: Consistency) -> Self {
        let mut s = self.clone();
        s.overrides.read = Some(c);
        s
    }

    /// A handle whose requests use write consistency `c`.
    pub fn with_write_consistency(&self, c: Consistency) -> Self {
        let mut s = self.clone();
        s.overrides.write = Some(c);
        s
    }

    /// A handle whose requests have deadline `d` (retries included).
    pub fn with_timeout(&self, d: Duration) -> Self {
        let mut s = self.clone();
        s.overrides.timeout = Some(d.min(crate::config::MAX_TIMEOUT));
        s
    }

    /// A handle whose requests belong to the W3C trace `ctx`: every RPC
    /// they make to a node carries a `traceparent` with `ctx`'s trace id and
    /// a new span id (and `ctx`'s `tracestate`), so the nodes' request spans
    /// can be joined to the caller's trace. Operations of different callers
    /// coalesced into one message carry the first traced one's context
    /// only (see the crate docs, "Tracing").
    ///
    /// ```no_run
    /// # async fn demo(cache: distcache::Client) -> Result<(), distcache::Error> {
    /// use distcache::TraceContext;
    ///
    /// // e.g. the `traceparent` header of the request being served
    /// let ctx = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    ///     .expect("a valid traceparent");
    /// let entry = cache.with_trace_context(ctx).get("user:123").await?;
    /// # let _ = entry; Ok(()) }
    /// ```
    pub fn with_trace_context(&self, ctx: TraceContext) -> Self {
        let mut s = self.clone();
        s.overrides.trace = Some(Arc::new(ctx));
        s
    }

    fn read_c(&self) -> Consistency {
        self.overrides
            .read
            .unwrap_or(self.inner.config.read_consistency)
    }

    fn write_c(&self) -> Consistency {
        self.overrides
            .write
            .unwrap_or(self.inner.config.write_consistency)
    }

    fn timeout(&self) -> Duration {
        self.overrides.timeout.unwrap_or(self.inner.config.timeout)
    }

    /// Runs `fut` within this handle's deadline, inside a tracing span, on
    /// the membership current when it starts.
    async fn run<T>(
        &self,
        op: &'static str,
        f: impl AsyncFnOnce(&View, Instant) -> Result<T>,
    ) -> Result<T> {
        let total = self.timeout();
        let deadline = request_deadline(Instant::now(), total);
        let span = tracing::debug_span!("distcache", op, trace_id = tracing::field::Empty);
        if let Some(ctx) = self.overrides.trace.as_deref()
            && !span.is_disabled()
        {
            span.record("trace_id", tracing::field::display(ctx.trace_id_hex()));
        }
        let view = self.inner.view();
        // Pinned where they are: wrapping the operation's future in a timeout
        // and a span would copy it (kilobytes) for every request.
        let work = std::pin::pin!(f(&view, deadline));
        let sleep = std::pin::pin!(tokio::time::sleep_until(deadline));
        let raced = crate::trace::scoped(self.overrides.trace.clone(), within(work, sleep, total));
        if span.is_disabled() {
            raced.await
        } else {
            raced.instrument(span).await
        }
    }

    /// [`Client::run`] for a write of `key`: once it is answered (or has
    /// failed: it may have applied), the key's near-cache copy is dropped.
    async fn run_write<T>(
        &self,
        op: &'static str,
        key: &[u8],
        f: impl AsyncFnOnce(&View, Instant) -> Result<T>,
    ) -> Result<T> {
        let r = self.run(op, f).await;
        self.written(key);
        r
    }

    /// A write of `key` by this client was answered (or failed: it may
    /// have applied): its near-cache copy, if any, is stale.
    fn written(&self, key: &[u8]) {
        if let Some(near) = &self.inner.near {
            near.invalidate(key);
        }
    }

    /// Reads a key; `Ok(None)` on a miss.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Entry>> {
        self.get_bytes(key_bytes(key)).await
    }

    /// [`Client::get`] with a key already held as [`Bytes`], which is used
    /// as it is: no copy (a server that parsed the key out of its input
    /// buffer, like the proxy, saves an allocation per request).
    pub async fn get_bytes(&self, key: Bytes) -> Result<Option<Entry>> {
        let c = self.read_c();
        self.run("get", async |inner, deadline| {
            if let (Some(near), Consistency::One) = (&inner.near, c) {
                return inner.read_near(near, &key, deadline).await;
            }
            let r = match c {
                Consistency::One => inner.read_one(&key, deadline).await?,
                // Boxed so that the common One read's future stays small.
                _ => Box::pin(inner.read_quorum(&key, c, deadline)).await?,
            };
            Ok(Entry::from_pb(r))
        })
        .await
    }

    /// Writes a key with an optional time to live; returns the new version.
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        Ok(self
            .set_with(key, value, ttl, Condition::Always)
            .await?
            .version)
    }

    /// Writes a key only if it holds no live value; true when written.
    pub async fn set_if_absent(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        Ok(self
            .set_with(key, value, ttl, Condition::IfAbsent)
            .await?
            .applied)
    }

    /// Writes a key only if it holds a live value; true when written.
    pub async fn set_if_present(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        Ok(self
            .set_with(key, value, ttl, Condition::IfPresent)
            .await?
            .applied)
    }

    /// Writes a key under a condition.
    ///
    /// Unconditional writes are stamped with this client's clock and sent to
    /// every healthy replica. Conditional ones are decided by the first
    /// healthy replica, which assigns the version, and then copied to the
    /// others.
    pub async fn set_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
        condition: Condition,
    ) -> Result<WriteOutcome> {
        let value = Bytes::copy_from_slice(value.as_ref());
        self.set_with_bytes(key_bytes(key), value, ttl, condition)
            .await
    }

    /// [`Client::set_with`] with a key and value already held as [`Bytes`],
    /// which are sent as they are: no copies.
    pub async fn set_with_bytes(
        &self,
        key: Bytes,
        value: Bytes,
        ttl: Option<Duration>,
        condition: Condition,
    ) -> Result<WriteOutcome> {
        let c = self.write_c();
        let mut req = pb::SetRequest {
            key: key.clone(),
            value,
            ttl_ms: ttl_ms(ttl),
            condition: pb::SetCondition::Always as i32,
            version: 0,
            keep_ttl: false,
        };
        self.run_write("set", &key, async |inner, deadline| {
            if condition == Condition::Always {
                req.version = inner.clock.next();
                let stamped = req.version;
                let acks = inner.write(&key, Op::Set(req), c, deadline).await?;
                // The version it was finally written with (it is stamped
                // again when a replica held a newer one).
                let version = acks
                    .iter()
                    .find_map(|(_, o)| match o {
                        Out::Set(r) if r.applied => Some(r.version),
                        _ => None,
                    })
                    .unwrap_or(stamped);
                return Ok(WriteOutcome {
                    applied: true,
                    version,
                });
            }
            req.condition = match condition {
                Condition::IfAbsent => pb::SetCondition::IfAbsent,
                _ => pb::SetCondition::IfPresent,
            } as i32;
            let (primary, out) = inner
                .on_primary(&key, Op::Set(req.clone()), c, deadline)
                .await?;
            let Out::Set(r) = out else {
                return Err(mismatched());
            };
            if r.applied {
                req.condition = pb::SetCondition::Always as i32;
                req.version = r.version;
                inner
                    .propagate(&key, primary, Op::Set(req), c, deadline)
                    .await?;
            }
            Ok(WriteOutcome {
                applied: r.applied,
                version: r.version,
            })
        })
        .await
    }

    /// Deletes a key (a versioned tombstone on every replica, so a replica
    /// that missed the delete cannot bring the key back); true when some
    /// replica held a live value.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key_bytes(key);
        let c = self.write_c();
        self.run_write("delete", &key, async |inner, deadline| {
            let version = inner.clock.next();
            let op = Op::Delete(pb::DeleteRequest {
                key: key.clone(),
                version,
                return_value: false,
            });
            let acks = inner.write(&key, op, c, deadline).await?;
            Ok(acks
                .iter()
                .any(|(_, o)| matches!(o, Out::Delete(d) if d.deleted)))
        })
        .await
    }

    /// Reads and deletes a key in one step (Redis GETDEL): the value it held,
    /// or `None`. The deciding replica (the first healthy one) reads and
    /// deletes under one lock, so of two concurrent `get_del`s only one gets
    /// the value; its tombstone is then copied to the other replicas. If that
    /// copy misses the write consistency the error is
    /// [`Error::NotReplicated`] (the key is deleted on the deciding replica).
    pub async fn get_del(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let key = key_bytes(key);
        let c = self.write_c();
        self.run_write("getdel", &key, async |inner, deadline| {
            let op = Op::Delete(pb::DeleteRequest {
                key: key.clone(),
                version: 0,
                return_value: true,
            });
            let (primary, out) = inner.on_primary(&key, op, c, deadline).await?;
            let Out::Delete(d) = out else {
                return Err(mismatched());
            };
            if !d.deleted {
                return Ok(None);
            }
            let tombstone = Op::Delete(pb::DeleteRequest {
                key: key.clone(),
                version: d.version,
                return_value: false,
            });
            inner
                .propagate(&key, primary, tombstone, c, deadline)
                .await?;
            Ok(Some(d.value))
        })
        .await
    }

    /// Replaces the value only if the key's version is `expected_version`
    /// (0: only if absent). A mismatch is `swapped == false` with the
    /// current version, not an error. Runs on the first healthy replica; the
    /// new version is then copied to the others.
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected_version: u64,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<WriteOutcome> {
        let key = key_bytes(key);
        let value = Bytes::copy_from_slice(value.as_ref());
        let c = self.write_c();
        let ttl_ms = ttl_ms(ttl);
        self.run_write("cas", &key, async |inner, deadline| {
            let op = Op::CompareAndSwap(pb::CompareAndSwapRequest {
                key: key.clone(),
                expected_version,
                value: value.clone(),
                ttl_ms,
            });
            let (primary, out) = inner.on_primary(&key, op, c, deadline).await?;
            let Out::CompareAndSwap(r) = out else {
                return Err(mismatched());
            };
            if r.swapped {
                let set = pb::SetRequest {
                    key: key.clone(),
                    value,
                    ttl_ms,
                    condition: pb::SetCondition::Always as i32,
                    version: r.version,
                    keep_ttl: false,
                };
                inner
                    .propagate(&key, primary, Op::Set(set), c, deadline)
                    .await?;
            }
            Ok(WriteOutcome {
                applied: r.swapped,
                version: r.version,
            })
        })
        .await
    }

    /// Adds `delta` to the decimal counter at `key` (absent counts as 0) and
    /// returns the new value. Not retried once sent (not idempotent).
    pub async fn incr_by(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64> {
        let key = key_bytes(key);
        let c = self.write_c();
        self.run_write("incr_by", &key, async |inner, deadline| {
            let op = Op::IncrBy(pb::IncrByRequest {
                key: key.clone(),
                delta,
            });
            let (primary, out) = inner.on_primary(&key, op, c, deadline).await?;
            let Out::IncrBy(r) = out else {
                return Err(mismatched());
            };
            let set = pb::SetRequest {
                key: key.clone(),
                value: Bytes::from(r.value.to_string()),
                ttl_ms: 0,
                condition: pb::SetCondition::Always as i32,
                version: r.version,
                keep_ttl: true,
            };
            inner
                .propagate(&key, primary, Op::Set(set), c, deadline)
                .await?;
            Ok(r.value)
        })
        .await
    }

    /// Sets the time to live of a live key (`None` removes its expiry);
    /// true when the key held a live value (as Redis's EXPIRE answers).
    ///
    /// Runs on the first healthy replica, which decides, like the other
    /// conditional operations; the entry it then holds (value, expiry and
    /// version) is copied whole to the other replicas. A bare version bump
    /// on every replica would leave one that missed a write with the same
    /// version as the others and a different value.
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: Option<Duration>) -> Result<bool> {
        let key = key_bytes(key);
        let c = self.write_c();
        let ttl_ms = ttl_ms(ttl);
        self.run_write("expire", &key, async |inner, deadline| {
            let op = Op::Expire(pb::ExpireRequest {
                key: key.clone(),
                ttl_ms,
                version: 0,
            });
            let (primary, out) = inner.on_primary(&key, op, c, deadline).await?;
            let Out::Expire(e) = out else {
                return Err(mismatched());
            };
            if !e.applied {
                return Ok(false);
            }
            let get = Op::Get(pb::GetRequest {
                key: key.clone(),
                ..Default::default()
            });
            let Out::Get(g) = inner
                .call(primary, get, deadline)
                .await
                .map_err(Error::from_status)?
            else {
                return Err(mismatched());
            };
            // (A newer version read back is a write that came in between,
            // replicated by its own writer; copying it again is harmless.)
            if g.found && g.version >= e.version {
                let set = pb::SetRequest {
                    key: key.clone(),
                    value: g.value,
                    ttl_ms: g.ttl_ms,
                    condition: pb::SetCondition::Always as i32,
                    version: g.version,
                    keep_ttl: false,
                };
                inner
                    .propagate(&key, primary, Op::Set(set), c, deadline)
                    .await?;
            }
            Ok(true)
        })
        .await
    }

    /// Reads many keys; results are in the order of `keys`. With read
    /// consistency `One` the keys are grouped per node into one `Batch` RPC
    /// each.
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Entry>>> {
        let keys: Vec<Bytes> = keys.iter().map(key_bytes).collect();
        let c = self.read_c();
        self.run("mget", async |inner, deadline| {
            crate::multi::mget(inner, keys, c, deadline).await
        })
        .await
    }

    /// Writes many keys with one time to live, one `Batch` RPC per node.
    /// Fails with [`crate::Error::Unavailable`] if any key missed its
    /// consistency level (the others are written all the same).
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        items: &[(K, V)],
        ttl: Option<Duration>,
    ) -> Result<()> {
        let items: Vec<(Bytes, Bytes)> = items
            .iter()
            .map(|(k, v)| (key_bytes(k), Bytes::copy_from_slice(v.as_ref())))
            .collect();
        let c = self.write_c();
        let ttl_ms = ttl_ms(ttl);
        let keys: Vec<Bytes> = match &self.inner.near {
            Some(_) => items.iter().map(|(k, _)| k.clone()).collect(),
            None => Vec::new(),
        };
        let r = self
            .run("mset", async |inner, deadline| {
                crate::multi::mset(inner, items, ttl_ms, c, deadline).await
            })
            .await;
        for k in &keys {
            self.written(k);
        }
        r
    }

    /// The nodes that own `key`, in preference order (the ring's answer;
    /// health does not change it).
    pub fn owners(&self, key: impl AsRef<[u8]>) -> Vec<String> {
        let view = self.inner.view();
        view.replicas(key.as_ref())
            .into_iter()
            .map(|i| view.topo.ring.node(i).to_owned())
            .collect()
    }

    /// The ring this client routes with now (a snapshot: a later
    /// [`Client::set_nodes`] does not change it).
    pub fn ring(&self) -> Arc<Ring> {
        self.inner.members.load().ring.clone()
    }

    /// Every node of the current membership: its ring name (the id of an
    /// `ID=URL` entry, else its URL) and the URL it is reached at, in ring
    /// index order.
    pub fn members(&self) -> Vec<(String, String)> {
        let topo = self.inner.members.load();
        topo.nodes[..topo.ring.len()]
            .iter()
            .map(|n| (n.name.clone(), n.url.clone()))
            .collect()
    }

    /// Every node of the current membership (by ring name) with whether it
    /// is considered healthy now, in ring index order.
    pub fn health(&self) -> Vec<(String, bool)> {
        let topo = self.inner.members.load();
        topo.nodes[..topo.ring.len()]
            .iter()
            .map(|n| (n.name.clone(), n.is_healthy()))
            .collect()
    }

    /// The nodes fenced in this client's view now: they may lack writes
    /// (restarted, stalled, lost for a while, newly joined) and get no
    /// reads until a catch-up copied what they missed. In ring index order.
    pub fn fenced(&self) -> Vec<String> {
        self.inner
            .members
            .load()
            .nodes
            .iter()
            .filter(|n| n.is_fenced())
            .map(|n| n.name.clone())
            .collect()
    }

    /// Asks every node for its `HealthCheck` answer (status, live keys,
    /// memory) over this client's own connections, so with its token and TLS
    /// settings; concurrently, each within the client's timeout. Does not
    /// change health as seen by operations.
    pub async fn health_checks(&self) -> Vec<(String, Result<pb::HealthCheckResponse>)> {
        let view = self.inner.view();
        let t = self.timeout();
        futures_util::future::join_all(view.topo.nodes.iter().map(|n| async move {
            let r = n.health_check(t).await.map_err(Error::from_status);
            (n.url.clone(), r)
        }))
        .await
    }

    /// The membership change being carried out, if one is: until its
    /// keys have been copied to their new owners, writes go to old and new
    /// owners and reads go to the old ones (see [`Client::set_nodes`]).
    pub fn moving(&self) -> Option<crate::types::MoveStatus> {
        let topo = self.inner.members.load();
        let m = topo.moving.as_ref()?;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Some(crate::types::MoveStatus {
            phase: m.phase(),
            from: m.from_nodes.clone(),
            to: topo.ring.nodes().to_vec(),
            elapsed: m.started.elapsed(),
            started_unix_ms: m.started_unix_ms,
            sources_done: l(&m.sources_done),
            sources: l(&m.sources),
            scanned: l(&m.scanned),
            copied: l(&m.copied),
            copied_bytes: l(&m.copied_bytes),
            passes: l(&m.passes),
            eta: m.eta(self.inner.config.rebalance.grace),
        })
    }

    /// Replaces the bearer token sent to the nodes from the next request
    /// on (health checks included), e.g. when a token file was rewritten
    /// before the old token expired; `None` stops sending one. A token that
    /// cannot be sent as a header value is refused with
    /// [`crate::Error::Config`] and the old one kept. A `Pipeline` stream
    /// already open goes on under the token it was opened with, until the
    /// node ends it (when that token expires or its key is retired) and it
    /// is reopened with this one.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), distcache::Error> {
    /// let cache = distcache::Client::builder()
    ///     .nodes(["http://10.0.0.1:7001"])
    ///     .token("dc1.k1.old")
    ///     .build()
    ///     .await?;
    /// cache.set_token(Some("dc1.k2.new"))?;
    /// # Ok(()) }
    /// ```
    pub fn set_token(&self, token: Option<&str>) -> Result<()> {
        Ok(self.inner.config.token_slot.set(token)?)
    }

    /// Replaces the cluster membership with `urls` (same forms as
    /// [`ClientBuilder::nodes`]) and rebuilds the ring, moving the data.
    ///
    /// Nodes in both lists keep their connections and health; new ones start
    /// healthy and connect on first use. Keys move only between the ring
    /// positions that changed, and the data moves with them: a *move* starts
    /// (see [`Client::moving`]). For the [`RebalanceConfig::grace`] (every
    /// other client sees the change meanwhile) and until the keys whose
    /// owners changed have been copied from their old owners to their new
    /// ones, writes go to both (waiting for the old primary and the new
    /// one), and reads and conditional operations go to the old owners; for
    /// another grace after the copy, reads and conditional operations use
    /// the new owners while writes still reach the old ones. Then the new
    /// ring serves alone, and removed nodes receive nothing from operations
    /// that start afterwards; they are closed once the operations that
    /// started before have finished.
    ///
    /// [`RebalanceConfig::grace`]: crate::config::RebalanceConfig::grace
    ///
    /// The same set of nodes in another order changes nothing and returns
    /// an empty [`MembershipChange`]. An empty list or an invalid URL is
    /// refused with [`crate::Error::Config`] and the membership is kept.
    /// Must be called inside a tokio runtime (new nodes start their
    /// coalescer task).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), distcache::Error> {
    /// let cache = distcache::Client::builder()
    ///     .nodes(["http://10.0.0.1:7001", "http://10.0.0.2:7001"])
    ///     .build()
    ///     .await?;
    /// // A node joins and one leaves, e.g. after a discovery poll.
    /// let change = cache.set_nodes(["http://10.0.0.2:7001", "http://10.0.0.3:7001"])?;
    /// assert_eq!(change.added, ["http://10.0.0.3:7001"]);
    /// assert_eq!(change.removed, ["http://10.0.0.1:7001"]);
    /// assert!(cache.set_nodes(["10.0.0.3:7001", "10.0.0.2:7001"])?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn set_nodes<I, S>(&self, urls: I) -> Result<MembershipChange>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let change = self.inner.members.set(urls, &self.inner.config)?;
        if change.moves_data() {
            self.inner.view().spawn_rebalance();
        }
        Ok(change)
    }

    /// A snapshot of this client's counters.
    pub fn stats(&self) -> ClientStats {
        let i = &self.inner;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            attempts: l(&i.stats.attempts),
            failovers: l(&i.stats.failovers),
            retries: l(&i.retry.stats.retries),
            budget_exhausted: l(&i.retry.stats.budget_exhausted),
            read_repairs: l(&i.stats.read_repairs),
            membership_changes: l(&i.members.changes),
            catch_ups: l(&i.stats.catch_ups),
            catch_up_entries: l(&i.stats.catch_up_entries),
            catch_up_failures: l(&i.stats.catch_up_failures),
            fenced_nodes: i
                .members
                .load()
                .nodes
                .iter()
                .filter(|n| n.is_fenced())
                .count() as u64,
            moves: l(&i.stats.moves),
            rebalance_entries: l(&i.stats.rebalance_entries),
            rebalance_forgotten: l(&i.stats.rebalance_forgotten),
            load_cache_failures: l(&i.stats.load_cache_failures),
            near_hits: i.near.as_ref().map_or(0, |n| l(&n.stats.hits)),
            near_misses: i.near.as_ref().map_or(0, |n| l(&n.stats.misses)),
            near_invalidations: i.near.as_ref().map_or(0, |n| l(&n.stats.invalidations)),
            near_refused_fills: i.near.as_ref().map_or(0, |n| l(&n.stats.refused_fills)),
            near_entries: i.near.as_ref().map_or(0, |n| n.len() as u64),
        }
    }
}

/// Builds a [`Client`]; see [`Client::builder`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    config: ClientConfig,
}

impl ClientBuilder {
    /// Starts from `config` instead of the defaults.
    pub fn from_config(config: ClientConfig) -> Self {
        Self { config }
    }

    /// The node URLs (`http://host:port`, or `host:port`).
    pub fn nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// Replicas per key (default 2).
    pub fn replicas(mut self, n: usize) -> Self {
        self.config.replicas = n;
        self
    }

    /// Virtual nodes per node on the ring (default 150).
    pub fn vnodes(mut self, n: usize) -> Self {
        self.config.vnodes = n;
        self
    }

    /// Default read consistency (default `One`).
    pub fn read_consistency(mut self, c: Consistency) -> Self {
        self.config.read_consistency = c;
        self
    }

    /// Default write consistency (default `One`).
    pub fn write_consistency(mut self, c: Consistency) -> Self {
        self.config.write_consistency = c;
        self
    }

    /// Overall deadline of one call, retries included (default 2 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = d;
        self
    }

    /// Deadline of one attempt against one node (default 500 ms).
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.config.attempt_timeout = d;
        self
    }

    /// TCP connect timeout (default 500 ms).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// HTTP/2 connections per node (default 2).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.config.pool_size = n;
        self
    }

    /// Interval of active health checks (default 500 ms; zero disables).
    pub fn probe_interval(mut self, d: Duration) -> Self {
        self.config.probe_interval = d;
        self
    }

    /// Consecutive failures that mark a node unhealthy (default 2).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.config.failure_threshold = n;
        self
    }

    /// How membership changes move the data: the grace before the copy
    /// and its rate (see [`RebalanceConfig`] and [`Client::set_nodes`]).
    pub fn rebalance(mut self, r: RebalanceConfig) -> Self {
        self.config.rebalance = r;
        self
    }

    /// Retry policy.
    pub fn retry(mut self, r: RetryConfig) -> Self {
        self.config.retry = r;
        self
    }

    /// A near cache of at most `max_bytes` of keys and values (default
    /// off): `One` reads are answered from this process while the nodes
    /// say the key has not changed. Each node tracks the keys this client
    /// read and pushes their invalidations on a stream (the node's
    /// `Invalidations` RPC, `--tracking-table-keys`); this client's own
    /// writes invalidate at once. An entry is used only while the node it
    /// came from is readable, its stream has not ended since, and the
    /// membership is the same; TTLs run here as on the node. `mget` and
    /// `Quorum`/`All` reads bypass it. See the `ClientStats::near_*`
    /// counters.
    ///
    /// ```no_run
    /// # async fn run() -> distcache::Result<()> {
    /// let cache = distcache::Client::builder()
    ///     .nodes(["http://127.0.0.1:7001"])
    ///     .near_cache(64 << 20)
    ///     .build()
    ///     .await?;
    /// cache.get("config:flags").await?; // from the node, now tracked
    /// cache.get("config:flags").await?; // from this process
    /// assert_eq!(cache.stats().near_hits, 1);
    /// # Ok(()) }
    /// ```
    pub fn near_cache(mut self, max_bytes: u64) -> Self {
        self.config.near_cache_bytes = max_bytes;
        self
    }

    /// Coalescing of concurrent operations into batches (default on, 64 per
    /// batch; `max_batch: 1` turns it off).
    pub fn coalesce(mut self, c: CoalesceConfig) -> Self {
        self.config.coalesce = c;
        self
    }

    /// Bearer token sent with every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into());
        self
    }

    /// PEM CA bundle to verify nodes with: nodes are then `https://` (a
    /// bare `host:port` gets `https://`, and `http://` is refused). Only
    /// with the `tls` feature (on by default).
    #[cfg(feature = "tls")]
    pub fn tls_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.tls_ca = Some(pem.into());
        self
    }

    /// A client certificate chain and its private key (both PEM; the key
    /// PKCS#8, PKCS#1 or SEC1) to present to nodes that require client
    /// certificates (mTLS, a node's `--tls-client-ca`). Needs
    /// [`tls_ca`](Self::tls_ca); a malformed certificate or key fails
    /// [`build`](Self::build). Only with the `tls` feature.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let cache = distcache::Client::builder()
    ///     .nodes(["https://cache-0.internal:7001"])
    ///     .tls_ca(std::fs::read("ca.pem")?)
    ///     .tls_identity(std::fs::read("client.pem")?, std::fs::read("client.key")?)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.config.tls_identity = Some(crate::config::TlsIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }

    /// Bytes of values one `mget` may return (default
    /// [`DEFAULT_MAX_ANSWER_BYTES`](crate::DEFAULT_MAX_ANSWER_BYTES)); past
    /// it the call fails with
    /// [`Error::ResourceExhausted`](crate::Error::ResourceExhausted).
    pub fn max_answer_bytes(mut self, bytes: usize) -> Self {
        self.config.max_answer_bytes = bytes;
        self
    }

    /// Validates the configuration and creates the client. Connections are
    /// opened lazily, so this succeeds while nodes are down; it must be
    /// called inside a tokio runtime (it starts the health prober).
    ///
    /// With the prober on, it returns once the first round of health checks
    /// answered and the nodes that said they are fenced (a node that just
    /// started is) have been caught up, or after the request `timeout` at
    /// the latest: a client just built can read at once.
    pub async fn build(self) -> Result<Client> {
        let mut config = self.config;
        config.validate()?;
        let client = Client::from_config(config)?;
        client.settle().await;
        Ok(client)
    }
}

/// Active health checks: every node of the current membership, every
/// `probe_interval`, concurrently.
async fn probe_loop(weak: std::sync::Weak<Inner>) {
    let Some(every) = weak.upgrade().map(|i| i.config.probe_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let timeout = inner.config.attempt_timeout;
        let topology = inner.members.load();
        // Only the topology is held while probing, so dropping the client
        // is not delayed by a slow probe.
        drop(inner);
        let probes: Vec<_> = topology
            .nodes
            .iter()
            .map(|node| {
                let node = node.clone();
                tokio::spawn(async move { node.probe(timeout).await })
            })
            .collect();
        for p in probes {
            let _ = p.await;
        }
        if let Some(inner) = weak.upgrade() {
            inner.stats.probe_rounds.fetch_add(1, Ordering::Release);
        }
        // A node whose last catch-up skipped a peer that serves again now
        // catches up from it too.
        for back in topology.nodes.iter().filter(|n| n.is_readable()) {
            for n in &topology.nodes {
                if let Some(since) = n.take_skipped(&back.url) {
                    n.owe_fence(since);
                }
            }
        }
        // Fenced nodes it can reach: catch them up (one task per node).
        if topology.nodes.iter().any(|n| n.wants_catch_up()) {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let view = View {
                inner,
                topo: topology,
            };
            for idx in 0..view.topo.nodes.len() {
                if view.topo.nodes[idx].wants_catch_up() {
                    view.spawn_catch_up(idx);
                }
            }
        }
    }
}

/// Keeps a near-cache subscription running for every node of the current
/// membership (see `near.rs`); each ends with its node's membership.
async fn near_loop(weak: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        for node in &inner.members.load().nodes {
            if !node.subscribed.swap(true, Ordering::AcqRel) {
                let task = tokio::spawn(crate::near::subscription(weak.clone(), node.clone()));
                if let Ok(mut t) = inner.near_tasks.lock() {
                    t.retain(|h| !h.is_finished());
                    t.push(task);
                }
            }
        }
    }
}

/// A random 64-bit id: the standard library's randomly keyed hasher over
/// the process id and the time (no random-number crate needed for it).
fn random_id() -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos))
}
