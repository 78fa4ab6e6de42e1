//! Retries: exponential backoff with jitter (backon's builder), bounded per
//! call by `max_retries` and the call's deadline, and across calls by a retry
//! budget (tower's `TpsBudget`): every call deposits, every retry withdraws,
//! so when the whole cluster is down retries stay a small fraction of
//! traffic instead of multiplying it.
//!
//! Only callers whose operation is safe to repeat use this: reads, and
//! writes that carry a version (a node ignores a version it already holds).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::config::RetryConfig;
use crate::error::Result;

/// Counters of the retry machinery, for tests and dashboards.
#[derive(Debug, Default)]
pub(crate) struct RetryStats {
    pub(crate) retries: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
}

/// The retry policy of one client.
#[derive(Debug)]
pub(crate) struct Retrier {
    config: RetryConfig,
    budget: TpsBudget,
    pub(crate) stats: RetryStats,
}

impl Retrier {
    pub(crate) fn new(config: RetryConfig) -> Self {
        let budget = TpsBudget::new(
            config.budget_window,
            config.budget_min_per_sec,
            config.budget_ratio,
        );
        Self {
            config,
            budget,
            stats: RetryStats::default(),
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.config.min_delay)
            .with_max_delay(self.config.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.config.max_retries)
            .build()
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of retries
    /// or budget, or the next backoff would overrun `deadline`.
    pub(crate) async fn run<T, F, Fut>(&self, deadline: Instant, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run_unless(deadline, attempt, || false).await
    }

    /// [`Retrier::run`], giving up early once `give_up()` is true (e.g. the
    /// node was marked unhealthy, so other replicas should take over).
    pub(crate) async fn run_unless<T, F, Fut>(
        &self,
        deadline: Instant,
        mut attempt: F,
        give_up: impl Fn() -> bool,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.budget.deposit();
        let mut delays = self.backoff();
        loop {
            let err = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            if give_up() {
                return Err(err);
            }
            let Some(delay) = delays.next() else {
                return Err(err);
            };
            if Instant::now() + delay >= deadline {
                return Err(err);
            }
            if !self.budget.withdraw() {
                self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("retry budget exhausted");
                return Err(err);
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?delay, error = %err, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::AtomicUsize;

    fn unavailable() -> Error {
        Error::Unavailable {
            needed: 1,
            acked: 0,
        }
    }

    fn config(max_retries: usize, min_per_sec: u32, ratio: f32) -> RetryConfig {
        RetryConfig {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            max_retries,
            budget_min_per_sec: min_per_sec,
            budget_ratio: ratio,
            budget_window: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_exponentially_within_bounds() {
        let r = Retrier::new(config(4, 100, 1.0));
        let calls = AtomicUsize::new(0);
        let start = Instant::now();
        let out: Result<()> = r
            .run(start + Duration::from_secs(60), || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(unavailable())
            })
            .await;
        assert!(matches!(out, Err(Error::Unavailable { .. })));
        assert_eq!(calls.load(Ordering::Relaxed), 5, "1 try + 4 retries");
        // Delays 10, 20, 40, 80 ms, each plus jitter of up to itself (virtual time).
        let slept = start.elapsed();
        assert!(slept >= Duration::from_millis(150), "{slept:?}");
        assert!(slept <= Duration::from_millis(300), "{slept:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures() {
        let r = Retrier::new(config(4, 100, 1.0));
        let calls = AtomicUsize::new(0);
        let out = r
            .run(Instant::now() + Duration::from_secs(60), || async {
                if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                    Err(unavailable())
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.ok(), Some(7));
        assert_eq!(r.stats.retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let r = Retrier::new(config(4, 100, 1.0));
        let calls = AtomicUsize::new(0);
        let out: Result<()> = r
            .run(Instant::now() + Duration::from_secs(60), || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Error::InvalidArgument("too big".into()))
            })
            .await;
        assert!(matches!(out, Err(Error::InvalidArgument(_))));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_stops_retries() {
        let r = Retrier::new(config(100, 1000, 1.0));
        let start = Instant::now();
        let _: Result<()> = r
            .run(start + Duration::from_millis(100), || async {
                Err(unavailable())
            })
            .await;
        // Timers have millisecond granularity and round up.
        assert!(start.elapsed() <= Duration::from_millis(101));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_across_calls() {
        // No free retries per second, 10 % of calls: 100 failing calls may
        // retry about 10 times in all, not 100 × 3.
        let r = Retrier::new(config(3, 0, 0.1));
        for _ in 0..100 {
            let _: Result<()> = r
                .run(Instant::now() + Duration::from_secs(60), || async {
                    Err(unavailable())
                })
                .await;
        }
        let retries = r.stats.retries.load(Ordering::Relaxed);
        assert!(retries <= 15, "retries = {retries}");
        assert!(r.stats.budget_exhausted.load(Ordering::Relaxed) >= 85);
    }
}
