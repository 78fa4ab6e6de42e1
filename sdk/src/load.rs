//! [`Client::get_or_load`]: read-through with in-process single-flight.
//!
//! A miss starts a *load*: the caller's loader runs in a task of its own,
//! its value is written with the caller's TTL, and every caller of the same
//! client (clones included) that misses the same key meanwhile waits for
//! that one load instead of starting its own. The task, not the callers,
//! owns the load: a caller that gives up (its future dropped, by its own
//! timeout or otherwise) leaves the others waiting and the value is still
//! cached. A loader's error or panic reaches every caller waiting on it as
//! [`Error::Load`]; nothing is cached, and the next miss loads again.
//!
//! ```text
//!  caller ─ get ─ hit ───────────────────────────────▶ value
//!             └── miss ─ join the key's load ─ wait ─▶ value | Error::Load
//!                          │ (none: start one)
//!                          ▼
//!              load task: get again (hit: done) ─ loader() ─ set(ttl) ─ publish
//! ```
//!
//! Not here: coalescing across clients or processes (each client loads a
//! key once at a time; N clients may load it N times), negative caching,
//! refresh-ahead, and a bound on the loader's time (the loader is never
//! cancelled: bound it inside, e.g. with `tokio::time::timeout`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::replica::Inner;
use crate::types::Condition;

/// What a loader's error becomes: shared by every caller waiting on it.
type LoadError = Arc<dyn std::error::Error + Send + Sync>;

/// A load's outcome, once there is one.
type Landed = Option<std::result::Result<Bytes, LoadError>>;

/// A loader as its load runs it: boxed once a caller missed, so that the
/// machinery below is not generic.
type Loader = Box<dyn FnOnce() -> LoaderFuture + Send>;
type LoaderFuture = Pin<Box<dyn Future<Output = std::result::Result<Bytes, LoadError>> + Send>>;

/// Why a load ended without its loader's answer; inside [`Error::Load`]
/// (`err.downcast_ref::<LoadAborted>()`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadAborted {
    /// The loader panicked; the panic's message.
    #[error("loader panicked: {0}")]
    Panicked(String),
    /// The load's task was cancelled before it answered (its runtime
    /// shutting down).
    #[error("load cancelled before it answered")]
    Cancelled,
}

/// A client's loads in flight, by key (a field of the client's shared
/// state, so every clone joins the same loads). Locked only to look up,
/// insert and remove; never across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Flights(Mutex<HashMap<Bytes, watch::Receiver<Landed>>>);

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, watch::Receiver<Landed>>> {
        // Nothing panics while holding the lock; a poisoned table is whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Client {
    /// Reads `key`; on a miss, calls `loader` and caches what it returns
    /// for `ttl` (`None`: no expiry), with in-process single-flight.
    ///
    /// - **Once per key**: callers of this client (and its clones) that
    ///   miss the same key while a load of it runs wait for that load; the
    ///   loader runs once. A load first reads the key again, so a caller
    ///   that missed just as an earlier load cached its value gets that
    ///   value instead of loading again.
    /// - **Deadlines and cancellation**: the load runs in a task of its
    ///   own. Dropping a caller's future (e.g. by `tokio::time::timeout`,
    ///   that caller's own deadline) only ends that caller's wait: the
    ///   others keep waiting and the value is still cached. The handle's
    ///   request timeout bounds each read and the write, not the loader:
    ///   a loader that never returns holds the key's load (bound it inside).
    /// - **Errors**: a loader's error, or its panic as
    ///   [`LoadAborted::Panicked`], reaches every waiting caller as
    ///   [`Error::Load`] (downcast it to the loader's error type); nothing is
    ///   cached and the next miss loads again. The first read's errors
    ///   (e.g. [`Error::Unavailable`]) are returned as they are: the loader
    ///   is not called when the cache cannot be asked.
    /// - **A failed write**: when caching the loaded value fails (a node
    ///   refuses it, too few replicas), every caller still gets the value;
    ///   the failure is logged (`warn`), counted in
    ///   [`ClientStats::load_cache_failures`](crate::ClientStats), and the next
    ///   miss loads again.
    ///
    /// Each caller's first read uses its own handle (its consistency
    /// levels and timeout, see [`Client::with_timeout`]); the load's second
    /// read and its write use the handle of the caller that started it.
    /// The value is written unconditionally: an invalidation racing a load
    /// (the loader read the old data, the delete came before the write)
    /// leaves the old value cached until `ttl`, as with any read-through
    /// cache.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), distcache::Error> {
    /// use std::time::Duration;
    ///
    /// let cache = distcache::Client::builder()
    ///     .nodes(["http://10.0.0.1:7001", "http://10.0.0.2:7001"])
    ///     .build()
    ///     .await?;
    /// let profile = cache
    ///     .get_or_load("profile:7", Some(Duration::from_secs(300)), || async {
    ///         // The slow system of record; runs once however many callers miss.
    ///         Ok::<_, std::io::Error>(r#"{"id":7,"name":"user-7"}"#)
    ///     })
    ///     .await?;
    /// assert_eq!(&profile[..], br#"{"id":7,"name":"user-7"}"#);
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load<F, Fut, V, E>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<Bytes>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        V: Into<Bytes> + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let key = Bytes::copy_from_slice(key.as_ref());
        if let Some(hit) = self.get_bytes(key.clone()).await? {
            return Ok(hit.value);
        }
        let loader: Loader = Box::new(move || {
            Box::pin(async move {
                match loader().await {
                    Ok(v) => Ok(v.into()),
                    Err(e) => Err(LoadError::from(e.into())),
                }
            })
        });
        let mut landed = self.join_or_start(key, ttl, loader);
        // Cloned out at once: the channel's read lock is not held across an
        // await (there is none after it).
        let outcome = landed.wait_for(Option::is_some).await.map(|v| v.clone());
        match outcome {
            Ok(Some(Ok(value))) => Ok(value),
            Ok(Some(Err(e))) => Err(Error::Load(e)),
            // The load's task was dropped without publishing.
            Ok(None) | Err(_) => Err(Error::Load(Arc::new(LoadAborted::Cancelled))),
        }
    }

    /// The wait for `key`'s load in flight, after starting one if there is
    /// none. Synchronous: a caller dropped here cannot leave a load
    /// registered but never started.
    fn join_or_start(
        &self,
        key: Bytes,
        ttl: Option<Duration>,
        loader: Loader,
    ) -> watch::Receiver<Landed> {
        let mut table = self.inner.flights.lock();
        if let Some(landed) = table.get(&key) {
            return landed.clone();
        }
        let (publish, landed) = watch::channel(None);
        table.insert(key.clone(), landed.clone());
        drop(table);
        let landing = Landing {
            inner: self.inner.clone(),
            key,
            landed: landed.clone(),
        };
        tokio::spawn(load(self.clone(), landing, ttl, loader, publish));
        landed
    }
}

/// One load, in its own task: read again, run the loader (in a task of
/// its own, to catch a panic), cache its value, then leave the table and
/// publish.
async fn load(
    cache: Client,
    landing: Landing,
    ttl: Option<Duration>,
    loader: Loader,
    publish: watch::Sender<Landed>,
) {
    let key = landing.key.clone();
    // A read error here is not the caller's (its own read just answered):
    // load as if it missed.
    let outcome = if let Ok(Some(hit)) = cache.get_bytes(key.clone()).await {
        Ok(hit.value)
    } else {
        // `loader()` inside the task too: a loader that panics before its
        // first await is caught the same.
        let ran = tokio::spawn(async move { loader().await }).await;
        let outcome = match ran {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => {
                Err(Arc::new(LoadAborted::Panicked(panic_message(e.into_panic()))) as LoadError)
            }
            Err(_) => Err(Arc::new(LoadAborted::Cancelled) as LoadError),
        };
        if let Ok(value) = &outcome
            && let Err(e) = cache
                .set_with_bytes(key, value.clone(), ttl, Condition::Always)
                .await
        {
            cache
                .inner
                .stats
                .load_cache_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "get_or_load: caching the loaded value failed; returning it uncached");
        }
        outcome
    };
    // Out of the table before publishing: a caller that saw this outcome
    // and calls again starts a new load (or hits), never joins this one.
    drop(landing);
    publish.send_replace(Some(outcome));
}

/// A load's entry in the table, removed when this is dropped: when the
/// load is done, or when its task is dropped unfinished (its waiters then
/// see the channel closed).
#[derive(Debug)]
struct Landing {
    inner: Arc<Inner>,
    key: Bytes,
    landed: watch::Receiver<Landed>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut table = self.inner.flights.lock();
        // Only this load's entry: a later load of the key is another's.
        if table
            .get(&self.key)
            .is_some_and(|l| l.same_channel(&self.landed))
        {
            table.remove(&self.key);
        }
    }
}

/// The message of a panic's payload (`panic!` gives a `&str` or `String`).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(not a string)".to_owned(), |s| (*s).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_is_kept_whatever_its_type() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(7)), "(not a string)");
    }
}
