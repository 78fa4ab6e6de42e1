//! The reload signal: SIGHUP, heard once per process and handed to every
//! part that re-reads something (the node's and the proxy's certificates,
//! secrets and token file, the proxy's cluster file), and the counter of how
//! reloads went.
//!
//! [`hangups`] replaces SIGHUP's default action (ending the process) as soon
//! as it is called, so a server calls it early in `main`, whatever it is
//! configured to reload. Each SIGHUP then bumps a [`Reloads`] value; every
//! subscriber (a clone) sees it, and signals that arrive while a reload is
//! running fold into one more reload. Outside Unix nothing ever ticks.
//!
//! This module does not know what is reloaded, nor does it watch files.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// The reload signal: how many SIGHUPs the process has had. Clone it to
/// subscribe; wait with [`next`].
pub type Reloads = watch::Receiver<u64>;

/// Starts listening for SIGHUP (from here on it no longer ends the process)
/// and returns the signal every reloading part subscribes to. Needs a tokio
/// runtime. If the handler cannot be installed, that is logged and the
/// signal never ticks.
pub fn hangups() -> Reloads {
    let (tx, rx) = watch::channel(0);
    listen(tx);
    rx
}

#[cfg(unix)]
fn listen(tx: watch::Sender<u64>) {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed here, before returning, so that no SIGHUP after start-up
    // finds the default action in place.
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            // Dropping `tx` leaves subscribers waiting forever (see `next`).
            tracing::warn!(error = %e, "cannot listen for SIGHUP; nothing will be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading");
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
                () = tx.closed() => return,
            }
        }
    });
}

/// No SIGHUP: dropping `tx` leaves subscribers waiting forever.
#[cfg(not(unix))]
fn listen(_tx: watch::Sender<u64>) {}

/// A signal that never ticks (for servers run in-process, as tests do).
pub fn never() -> Reloads {
    watch::channel(0).1
}

/// A signal ticked by hand: each `send_modify` is one reload (tests).
pub fn manual() -> (watch::Sender<u64>, Reloads) {
    watch::channel(0)
}

/// Resolves at the next reload (at once if one came since the last wait);
/// never, once the signal's sender is gone.
pub async fn next(r: &mut Reloads) {
    if r.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `reload` at every tick of `reloads` until `stop` turns true: logs
/// what it re-read, or, when it failed, a warning that the old material
/// was kept and why; counts each outcome in `counter`.
pub async fn follow<F>(
    mut reloads: Reloads,
    counter: ReloadCounter,
    mut stop: watch::Receiver<bool>,
    mut reload: F,
) where
    F: FnMut() -> Result<String, String>,
{
    loop {
        tokio::select! {
            () = crate::stopped(&mut stop) => return,
            () = next(&mut reloads) => {}
        }
        match reload() {
            Ok(what) => {
                counter.count(true);
                tracing::info!(reloaded = %what, "reload done");
            }
            Err(why) => {
                counter.count(false);
                tracing::warn!(error = %why, "reload failed; keeping the old certificates, keys and tokens");
            }
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// `reloads_total{result="ok"|"failed"}`: one per reload, failed when
/// anything could not be re-read (the old material was kept). Clones share.
#[derive(Debug, Clone)]
pub struct ReloadCounter(Family<ResultLabel, Counter>);

impl Default for ReloadCounter {
    fn default() -> Self {
        let f = Family::default();
        // Both series show, at 0, before the first reload.
        for result in ["ok", "failed"] {
            let _ = f.get_or_create(&ResultLabel { result });
        }
        Self(f)
    }
}

impl ReloadCounter {
    /// Counts one reload.
    pub fn count(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.0.get_or_create(&ResultLabel { result }).inc();
    }

    /// Registers `reloads` in `r` (`distcache_reloads_total` in the node's
    /// registry, `distcache_proxy_reloads_total` in the proxy's).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "reloads",
            "Reloads on SIGHUP, by result (failed: the old certificates, keys or tokens were kept)",
            self.0.clone(),
        );
    }

    /// The counts so far: (ok, failed).
    pub fn counts(&self) -> (u64, u64) {
        let get = |result| self.0.get_or_create(&ResultLabel { result }).get();
        (get("ok"), get("failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_a_reload_and_never_does_not_tick() {
        let (tx, rx) = manual();
        let (mut a, mut b) = (rx.clone(), rx);
        tx.send_modify(|n| *n += 1);
        next(&mut a).await;
        next(&mut b).await;
        let mut n = never();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), next(&mut n)).await;
        assert!(waited.is_err());
        drop(tx);
        let gone = tokio::time::timeout(std::time::Duration::from_millis(20), next(&mut a)).await;
        assert!(gone.is_err(), "a dropped sender is no reload");
        let c = ReloadCounter::default();
        c.count(true);
        c.count(false);
        c.count(false);
        assert_eq!(c.counts(), (1, 2));
    }
}
