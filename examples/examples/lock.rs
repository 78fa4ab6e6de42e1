//! A distributed lock on the cache: set-if-absent with a TTL and a random
//! token to take it, compare-and-swap on its version to give it back.
//!
//! ```text
//! cargo run -p distcache-examples --example lock
//! ```
//!
//! On three nodes started in this process (or `DISTCACHE_NODES`), four
//! workers take turns at one lock, then a holder whose lease ran out tries
//! to release its successor's lease, and cannot.
//!
//! - **Acquire** is the SDK's `SET NX PX`: `set_with(key, token, ttl,
//!   Condition::IfAbsent)` applies only when the key holds no live value.
//!   The value is a random token naming the holder; the write's `version`
//!   identifies the lease, and doubles as a fencing token (a later lease
//!   gets a larger one), to hand to whatever the lock protects.
//! - **Release** must remove only this lease. The SDK has no
//!   delete-if-version, so the holder compare-and-swaps its own version to
//!   an empty value that expires in a millisecond: applied only if the key
//!   still holds this lease, on the node that decides, in one step.
//!
//! Limits (as with any lease): a holder paused past its TTL loses the lock
//! without knowing (check the fencing token downstream). The key's first
//! healthy replica decides; writes use quorum consistency so a granted
//! lease is on both replicas before `acquire` returns (if it cannot be, the
//! error is `NotReplicated` and the lease expires after its TTL).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distcache::{Client, Condition, Consistency};
use distcache_examples::{Cluster, NODES_ENV};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a release leaves behind: an empty value, gone after this.
const RELEASED_TTL: Duration = Duration::from_millis(1);
/// The longest pause between two tries of a waiting `acquire`.
const MAX_BACKOFF: Duration = Duration::from_millis(20);

/// A held lock.
#[derive(Debug)]
struct Lease {
    key: String,
    token: String,
    version: u64,
}

impl Lease {
    /// Larger for every later lease of the same lock.
    fn fencing_token(&self) -> u64 {
        self.version
    }
}

/// Named locks on one cluster.
#[derive(Debug, Clone)]
struct Locks {
    cache: Client,
}

impl Locks {
    fn new(cache: &Client) -> Self {
        Self {
            cache: cache.with_write_consistency(Consistency::Quorum),
        }
    }

    /// Takes lock `name` for `ttl` if nobody holds it.
    async fn try_acquire(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, distcache::Error> {
        let key = format!("lock:{name}");
        let token = format!("{:032x}", rand::random::<u128>());
        let out = self
            .cache
            .set_with(&key, &token, Some(ttl), Condition::IfAbsent)
            .await?;
        Ok(out.applied.then_some(Lease {
            key,
            token,
            version: out.version,
        }))
    }

    /// Takes lock `name` for `ttl`, trying again (with jittered, growing
    /// pauses) for at most `wait`; `None` if it stayed taken.
    async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Lease>, distcache::Error> {
        let until = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(lease) = self.try_acquire(name, ttl).await? {
                return Ok(Some(lease));
            }
            if Instant::now() + pause > until {
                return Ok(None);
            }
            // Jittered, so that waiters do not retry in lockstep.
            tokio::time::sleep(pause.mul_f64(rand::random_range(0.5..1.5))).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }

    /// Gives the lock back if `lease` still holds it; false when it had
    /// expired (and may be someone else's now: that lease is left alone).
    async fn release(&self, lease: Lease) -> Result<bool, distcache::Error> {
        let out = self
            .cache
            .compare_and_swap(&lease.key, lease.version, b"", Some(RELEASED_TTL))
            .await?;
        Ok(out.applied)
    }

    /// The token of whoever holds lock `name`.
    async fn holder(&self, name: &str) -> Result<Option<String>, distcache::Error> {
        let entry = self.cache.get(format!("lock:{name}")).await?;
        Ok(entry
            .filter(|e| !e.value.is_empty())
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }
}

/// What a worker did under the lock, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Enter { worker: usize, fencing_token: u64 },
    Exit { worker: usize },
}

/// `workers` tasks each take lock `name` `rounds` times, and log entering
/// and leaving the critical section (which takes `hold`).
async fn contend(
    locks: &Locks,
    name: &str,
    workers: usize,
    rounds: usize,
    hold: Duration,
) -> Result<Vec<Event>, BoxError> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let record = |log: &Mutex<Vec<Event>>, e| {
        if let Ok(mut l) = log.lock() {
            l.push(e);
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (locks, log, name) = (locks.clone(), log.clone(), name.to_owned());
        tasks.spawn(async move {
            for _ in 0..rounds {
                let lease = locks
                    .acquire(&name, Duration::from_secs(10), Duration::from_secs(20))
                    .await?
                    .ok_or("the lock stayed taken for 20 s")?;
                record(
                    &log,
                    Event::Enter {
                        worker,
                        fencing_token: lease.fencing_token(),
                    },
                );
                tokio::time::sleep(hold).await;
                record(&log, Event::Exit { worker });
                if !locks.release(lease).await? {
                    return Err("a lease expired while held".into());
                }
            }
            Ok::<(), BoxError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(log)
}

/// Whether `log` is a sequence of whole, non-overlapping holds, each with a
/// larger fencing token than the one before.
fn no_overlap(log: &[Event]) -> bool {
    let mut last_token = 0;
    log.chunks(2).all(|hold| match hold {
        [
            Event::Enter {
                worker,
                fencing_token,
            },
            Event::Exit { worker: w },
        ] if worker == w && *fencing_token > last_token => {
            last_token = *fencing_token;
            true
        }
        _ => false,
    })
}

/// A holder whose lease ran out releases after another took the lock:
/// (whether its release applied, whether the other still holds it).
async fn stale_release(locks: &Locks, name: &str) -> Result<(bool, bool), BoxError> {
    let wait = Duration::from_secs(10);
    let slow = locks
        .acquire(name, Duration::from_millis(200), wait)
        .await?
        .ok_or("the lock stayed taken")?;
    // Waits (polling) until the first lease expired.
    let next = locks
        .acquire(name, Duration::from_secs(10), wait)
        .await?
        .ok_or("the first lease never expired")?;
    let stale = locks.release(slow).await?;
    let kept = locks.holder(name).await?.as_deref() == Some(next.token.as_str());
    locks.release(next).await?;
    Ok((stale, kept))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    distcache_examples::init_tracing();
    let cluster = Cluster::from_list_or_start(std::env::var(NODES_ENV).ok()).await?;
    println!("nodes: {}", cluster.urls().join(", "));
    let locks = Locks::new(&cluster.client().await?);

    let log = contend(&locks, "report", 4, 3, Duration::from_millis(20)).await?;
    for e in &log {
        match e {
            Event::Enter {
                worker,
                fencing_token,
            } => print!("worker {worker} holds the lock (fencing token {fencing_token})"),
            Event::Exit { .. } => println!(", released"),
        }
    }
    println!(
        "{} holds, overlapping: {}",
        log.len() / 2,
        !no_overlap(&log)
    );

    let (stale, kept) = stale_release(&locks, "stale").await?;
    println!(
        "a holder whose 200 ms lease ran out released after another took it: \
         release applied = {stale}, the other still holds it = {kept}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eight_contending_holders_never_overlap() {
        let cluster = Cluster::start(3).await.unwrap();
        let locks = Locks::new(&cluster.client().await.unwrap());
        let log = contend(&locks, "job", 8, 5, Duration::from_millis(2))
            .await
            .unwrap();
        assert_eq!(log.len(), 8 * 5 * 2);
        assert!(no_overlap(&log), "{log:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_lease_cannot_release_its_successor() {
        let cluster = Cluster::start(3).await.unwrap();
        let locks = Locks::new(&cluster.client().await.unwrap());
        assert_eq!(stale_release(&locks, "l").await.unwrap(), (false, true));
    }

    #[test]
    fn overlapping_holds_are_detected() {
        let enter = |worker, fencing_token| Event::Enter {
            worker,
            fencing_token,
        };
        let exit = |worker| Event::Exit { worker };
        assert!(no_overlap(&[enter(0, 1), exit(0), enter(1, 2), exit(1)]));
        assert!(!no_overlap(&[enter(0, 1), enter(1, 2), exit(0), exit(1)]));
        assert!(!no_overlap(&[enter(0, 2), exit(0), enter(1, 1), exit(1)]));
        assert!(!no_overlap(&[enter(0, 1)]));
    }
}
