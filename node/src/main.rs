//! `distcache-node`: parses flags and config, sets up logging, binds the
//! listeners and runs the node until SIGINT or SIGTERM; SIGHUP re-reads its
//! certificates and secrets.

use std::process::ExitCode;

use distcache_node::cli::{Args, Command};
use distcache_node::config::NodeConfig;
use distcache_node::{Listeners, run_reloading};
use distcache_serve::{logging, reload, shutdown_signal};

fn main() -> ExitCode {
    let args = Args::from_env();
    if let Some(Command::Token(t)) = &args.command {
        return if t.run() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }
    let check = args.check_config;
    let mut config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("distcache-node: {e}");
            return ExitCode::from(if check { 1 } else { 2 });
        }
    };
    if check {
        return check_config(&config);
    }
    if let Err(e) = logging::init(&config.log, "distcache-node") {
        eprintln!("distcache-node: cannot set up logging: {e}");
        return ExitCode::from(2);
    }
    let fd_limit = distcache_serve::fds::raise_limit();
    config.server.max_connections = distcache_serve::fds::clamp_connections(
        config.server.max_connections,
        fd_limit,
        "--max-connections",
    );
    let code = match distcache_serve::runtime(config.server.threads) {
        Ok(rt) => rt.block_on(serve(config)),
        Err(e) => {
            eprintln!("distcache-node: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    };
    logging::flush();
    code
}

/// `--check-config`: warnings and errors on standard error, the effective
/// configuration on standard output.
fn check_config(config: &NodeConfig) -> ExitCode {
    let mut log = config.log.clone();
    log.file = None;
    log.otlp_endpoint = None;
    let _ = logging::init(&log, "distcache-node");
    let checked = distcache_serve::runtime(1)
        .map_err(distcache_node::NodeError::from)
        .and_then(|rt| rt.block_on(async { distcache_node::check::check(config) }));
    match checked {
        Ok(effective) => {
            println!("{effective}");
            eprintln!("distcache-node: configuration ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("distcache-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: NodeConfig) -> ExitCode {
    // First: from here on SIGHUP reloads instead of ending the process.
    let reloads = reload::hangups();
    let listeners = match Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, listen = %config.server.listen, admin = %config.server.admin_listen, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    if let (Ok(grpc), Ok(admin)) = (listeners.grpc.local_addr(), listeners.admin.local_addr()) {
        tracing::info!(%grpc, %admin, "listening");
    }
    match run_reloading(listeners, config, shutdown_signal(), reloads).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            ExitCode::FAILURE
        }
    }
}
