//! The node's fence: whether it may lack writes its peers hold, since when,
//! and why (see `FenceState` in the proto for the contract).
//!
//! A node fences itself when it starts (it lacks what was written while it
//! was down: everything when it starts empty) and when it notices it
//! stalled (a ticker thread sees its monotonic clock jump: SIGSTOP, a VM
//! pause, a starved host), because clients stop sending to a node that
//! stops answering. A client fences it with the `Fence` RPC when it lost
//! the node for a while. A catch-up (the SDK's, see `sdk/src/replica/
//! catchup.rs`) copies what peers wrote since `since_ms` and lifts the
//! fence with the epoch it started from; a fence raised meanwhile bumps the
//! epoch, so that catch-up cannot lift it.
//!
//! Not here: what is refused while fenced (`service.rs`'s gate), copying
//! data (the SDK drives it with `Scan`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use distcache_proto::v1 as pb;
use parking_lot::Mutex;

/// How far before the moment a node may have started missing writes a
/// catch-up must look: writers' clocks may lag the node's by the version
/// skew bound (30 s), and a write may be sent up to its deadline after it
/// was stamped.
pub(crate) const CATCH_UP_MARGIN_MS: u64 = 35_000;

/// A gap of the ticker longer than this is a stall: long enough for
/// clients to have given up on the node (their attempt timeout).
pub(crate) const STALL_MS: u64 = 1_000;

/// How often the ticker looks at the clock.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    since_ms: u64,
    reason: String,
    /// When the current epoch was raised (for the hold).
    raised_at: Option<Instant>,
}

/// What [`Fence::lift`] did.
#[derive(Debug)]
pub(crate) struct Lift {
    pub(crate) lifted: bool,
    pub(crate) state: pb::FenceState,
    /// When refused only for the hold: how long until it may be lifted.
    pub(crate) retry_after: Duration,
}

/// The fence of one node process.
#[derive(Debug)]
pub(crate) struct Fence {
    /// Read on every gated operation; the rest under the mutex.
    fenced: AtomicBool,
    state: Mutex<State>,
    /// Fences raised since start, for metrics.
    pub(crate) raised: AtomicU64,
    /// Random per process: tells a restart apart from a pause.
    pub(crate) incarnation: u64,
    /// When the stall watcher last ticked, in ms since `base`.
    last_tick: AtomicU64,
    base: Instant,
    /// The shortest time a fence stays up (`--fence-hold`): every client
    /// that lost the node must have seen it back, and fenced it from when
    /// it lost it, before a catch-up lifts the fence. Else a client that
    /// still holds the node for down goes on deciding conditional
    /// operations on another replica, and writing only there, while
    /// clients that saw the catch-up decide and read here.
    hold: Duration,
}

impl Fence {
    /// A fence raised from the start: the node may lack what was written
    /// since `since_ms` (0 for anything).
    pub(crate) fn started(since_ms: u64, reason: String, hold: Duration) -> Self {
        let f = Self {
            fenced: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            raised: AtomicU64::new(0),
            incarnation: incarnation(),
            last_tick: AtomicU64::new(0),
            base: Instant::now(),
            hold,
        };
        f.raise(since_ms, reason);
        f
    }

    /// Whether the node is fenced now.
    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// [`Fence::is_fenced`], after raising the fence if the stall watcher
    /// has not ticked for longer than a stall: after SIGCONT the requests
    /// that queued up during the pause may run before the watcher does,
    /// and they must already be refused.
    pub(crate) fn check(&self, now_ms: fn() -> u64) -> bool {
        if self.is_fenced() {
            return true;
        }
        let elapsed = self.elapsed_ms();
        let gap = elapsed.saturating_sub(self.last_tick.load(Ordering::Relaxed));
        if gap > STALL_MS {
            // The watcher's next tick sees the same gap; one fence is enough.
            self.last_tick.store(elapsed, Ordering::Relaxed);
            let since = now_ms().saturating_sub(gap + CATCH_UP_MARGIN_MS);
            self.raise(since, format!("stalled for {gap} ms"));
            return true;
        }
        false
    }

    /// Raises (or widens) the fence: the node may lack entries written
    /// since `since_ms`. Always a new epoch, so a catch-up already running
    /// (which may have passed entries this fence needs) cannot lift it.
    pub(crate) fn raise(&self, since_ms: u64, reason: String) -> pb::FenceState {
        let mut s = self.state.lock();
        let was = self.fenced.load(Ordering::Acquire);
        s.epoch += 1;
        s.since_ms = if was {
            s.since_ms.min(since_ms)
        } else {
            since_ms
        };
        tracing::warn!(
            epoch = s.epoch,
            since_ms = s.since_ms,
            %reason,
            "node fenced: refusing reads of replicating clients until caught up"
        );
        s.reason = reason;
        s.raised_at = Some(Instant::now());
        self.fenced.store(true, Ordering::Release);
        self.raised.fetch_add(1, Ordering::Relaxed);
        snapshot(&s, true)
    }

    /// Milliseconds since the fence was made (monotonic: it goes on during
    /// SIGSTOP, which is what makes a stall visible).
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Lifts the fence if `incarnation` and `epoch` are still current and
    /// the fence is older than the hold.
    pub(crate) fn lift(&self, incarnation: u64, epoch: u64) -> Lift {
        let s = self.state.lock();
        let ok = incarnation == self.incarnation && epoch == s.epoch;
        let age = s.raised_at.map_or(self.hold, |t| t.elapsed());
        if ok && self.is_fenced() && age < self.hold {
            return Lift {
                lifted: false,
                state: snapshot(&s, true),
                retry_after: self.hold - age,
            };
        }
        if ok && self.fenced.swap(false, Ordering::AcqRel) {
            tracing::info!(epoch, "node caught up: fence lifted");
        }
        Lift {
            lifted: ok,
            state: snapshot(&s, self.is_fenced()),
            retry_after: Duration::ZERO,
        }
    }

    /// The fence as the wire shows it.
    pub(crate) fn state(&self) -> pb::FenceState {
        let s = self.state.lock();
        snapshot(&s, self.is_fenced())
    }

    /// Starts the thread that raises the fence when the process stalled.
    /// It ends once the fence is dropped (the node stopped). A thread, not
    /// a task: a stalled runtime must not hide its own stall.
    pub(crate) fn watch_stalls(self: &Arc<Self>, now_ms: fn() -> u64) -> std::io::Result<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("stall-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    let Some(fence) = weak.upgrade() else { return };
                    // Raises the fence on a gap (unless a request did).
                    fence.check(now_ms);
                    let elapsed = fence.elapsed_ms();
                    fence.last_tick.store(elapsed, Ordering::Relaxed);
                }
            })
            .map(|_| ())
    }
}

/// The fence's figures at scrape time.
#[derive(Debug)]
pub(crate) struct FenceCollector(pub(crate) Arc<Fence>);

impl prometheus_client::collector::Collector for FenceCollector {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use distcache_serve::metrics::{counter, gauge};
        gauge(
            &mut enc,
            "fenced",
            "1 while the node is fenced: refusing reads of replicating clients until caught up",
            u64::from(self.0.is_fenced()),
        )?;
        counter(
            &mut enc,
            "fences",
            "Fences raised since start (start-up, stalls, clients)",
            self.0.raised.load(Ordering::Relaxed),
        )
    }
}

fn snapshot(s: &State, fenced: bool) -> pb::FenceState {
    pb::FenceState {
        fenced,
        epoch: s.epoch,
        since_ms: s.since_ms,
        reason: s.reason.clone(),
    }
}

/// A random incarnation number, never 0 (0 means "any" on the wire).
fn incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_fence_is_lifted_only_with_its_own_epoch_and_incarnation() {
        let f = Fence::started(100, "started".into(), Duration::ZERO);
        assert!(f.is_fenced());
        let first = f.state();
        assert_eq!((first.epoch, first.since_ms), (1, 100));
        // A second fence while fenced widens `since` and bumps the epoch.
        let second = f.raise(50, "lost by a client".into());
        assert_eq!((second.epoch, second.since_ms), (2, 50));
        let third = f.raise(80, "again".into());
        assert_eq!(third.since_ms, 50, "the widest window is kept");
        assert!(
            !f.lift(f.incarnation, 2).lifted,
            "a stale epoch lifts nothing"
        );
        assert!(!f.lift(f.incarnation ^ 1, 3).lifted, "another incarnation");
        assert!(f.is_fenced());
        let l = f.lift(f.incarnation, 3);
        assert!(l.lifted && !l.state.fenced && !f.is_fenced());
        // A new fence after a lift starts its own window.
        assert_eq!(f.raise(900, "stalled".into()).since_ms, 900);
    }

    /// A fence younger than the hold is not lifted, even with the right
    /// epoch: a client that lost the node may not have seen it back yet
    /// (its probe interval), and it must get to fence it from when it lost
    /// it first. The answer says how long to wait; a fence raised during
    /// the wait makes the epoch stale.
    #[test]
    fn a_fence_younger_than_the_hold_waits_and_says_how_long() {
        let hold = Duration::from_secs(60);
        let f = Fence::started(0, "started".into(), hold);
        let epoch = f.state().epoch;
        let early = f.lift(f.incarnation, epoch);
        assert!(!early.lifted && early.state.fenced && f.is_fenced());
        assert!(early.retry_after > Duration::from_secs(59) && early.retry_after <= hold);
        // Stale epochs get no wait: they must catch up again.
        let stale = f.lift(f.incarnation, epoch + 1);
        assert!(!stale.lifted && stale.retry_after.is_zero());
        // Once the hold has passed (as if raised a minute ago), it lifts.
        f.state.lock().raised_at = Instant::now().checked_sub(hold);
        let l = f.lift(f.incarnation, epoch);
        assert!(l.lifted && !f.is_fenced());
        // A lift of a fence already lifted needs no wait either.
        assert!(f.lift(f.incarnation, epoch).retry_after.is_zero());
    }

    #[test]
    fn a_request_after_a_stall_raises_the_fence_before_the_watcher_does() {
        let mut f = Fence::started(0, "started".into(), Duration::ZERO);
        let s = f.state();
        assert!(f.lift(f.incarnation, s.epoch).lifted);
        assert!(!f.check(|| 100_000), "no gap yet");
        // As if the process had been stopped for two seconds.
        f.base = Instant::now().checked_sub(Duration::from_secs(2)).unwrap();
        assert!(f.check(|| 100_000));
        let s = f.state();
        assert!(s.fenced && s.reason.starts_with("stalled for"));
        assert!(s.since_ms <= 100_000 - 2_000 - CATCH_UP_MARGIN_MS);
        // Once: the gap is consumed.
        let epoch = s.epoch;
        assert!(f.lift(f.incarnation, epoch).lifted);
        assert!(!f.check(|| 100_000));
    }

    #[test]
    fn incarnations_differ_between_fences() {
        let a = Fence::started(0, String::new(), Duration::ZERO).incarnation;
        let b = Fence::started(0, String::new(), Duration::ZERO).incarnation;
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }
}
