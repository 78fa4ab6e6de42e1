//! Shutdown: the signal that starts it, and the stop flag every task of a
//! server process watches (the role of mini-redis's `src/shutdown.rs`).
//!
//! A process owns one `watch::Sender<bool>`; it sends `true` once, and every
//! accept loop, background task and stream resolves [`stopped`] and winds
//! down. This module does not bound the drain: each server's `run` does,
//! with its grace period.

use tokio::sync::watch;

/// Resolves once the stop flag turns true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// [`stopped`] for an optional flag: never resolves without one.
pub async fn stopped_if(stop: Option<watch::Receiver<bool>>) {
    match stop {
        Some(mut rx) => stopped(&mut rx).await,
        None => std::future::pending().await,
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
