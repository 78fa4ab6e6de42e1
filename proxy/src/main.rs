//! `distcache-proxy`: parses flags, sets up logging, starts a dev cluster if
//! asked, reads the membership source if any, builds the SDK client, binds
//! the front ends, follows membership changes and serves until SIGINT or
//! SIGTERM; SIGHUP re-reads certificates, secrets, the token file and the
//! cluster file (see `security::ProxyReloader`).

use std::process::ExitCode;
use std::sync::Arc;

use distcache_proxy::cli::Args;
use distcache_proxy::dev::DevCluster;
use distcache_proxy::security::{ProxyReloader, read_token_file};
use distcache_proxy::{Backend, FrontSecurity, FrontendConfig, Listeners, membership, resp, run};
use distcache_serve::{fds, reload, shutdown_signal};
use tokio::net::TcpListener;
use tokio::sync::watch;

fn main() -> ExitCode {
    let args: Args = distcache_serve::cli::parse_or_exit();
    if args.check_config {
        return check_config(&args);
    }
    if let Err(e) = distcache_serve::logging::init(&args.log(), "distcache-proxy") {
        eprintln!("distcache-proxy: cannot set up logging: {e}");
        return ExitCode::from(2);
    }
    let runtime = match distcache_serve::runtime(args.threads.unwrap_or(0)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("distcache-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "proxy failed");
            ExitCode::FAILURE
        }
    };
    distcache_serve::logging::flush();
    code
}

/// `--check-config`: warnings and errors on standard error, the effective
/// configuration on standard output.
fn check_config(args: &Args) -> ExitCode {
    let mut log = args.log();
    log.file = None;
    log.otlp_endpoint = None;
    let _ = distcache_serve::logging::init(&log, "distcache-proxy");
    let checked = distcache_serve::runtime(1)
        .map_err(Box::<dyn std::error::Error>::from)
        .and_then(|rt| rt.block_on(args.check_config()));
    match checked {
        Ok(effective) => {
            println!("{effective}");
            eprintln!("distcache-proxy: configuration ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("distcache-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // First: from here on SIGHUP reloads instead of ending the process,
    // whatever the membership source.
    let reloads = reload::hangups();
    // Before anything starts, so a bad certificate or secret file stops here.
    let security = FrontSecurity::load(&args.front_tls()?, &args.front_auth())?;
    let dev = if args.dev && args.nodes.is_empty() {
        Some(DevCluster::start(3).await?)
    } else {
        None
    };
    // Read before the membership source: --discovery-health-ids probes the
    // nodes with the same token and CA as the SDK client.
    let token = match &args.token_file {
        Some(path) => Some(read_token_file(path)?),
        None => None,
    };
    let tls_ca = match &args.tls_ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let node_identity = args.node_identity()?;
    let discovery = match args.membership.discovery() {
        Some(mut d) => {
            d.check()?;
            d.access = membership::NodeAccess {
                tls_ca: tls_ca.clone(),
                identity: node_identity.clone(),
                token: token.clone(),
            };
            Some(d)
        }
        None => None,
    };
    let nodes = match (&dev, &discovery) {
        (Some(d), _) => d.urls.clone(),
        (None, Some(d)) => tokio::select! {
            n = membership::initial(d) => n?,
            () = shutdown_signal() => return Ok(()),
        },
        (None, None) => args.nodes.clone(),
    };
    let mut builder = distcache::Client::builder()
        .nodes(nodes.clone())
        .replicas(args.replicas)
        .read_consistency(args.read_consistency.into())
        .write_consistency(args.write_consistency.into())
        .timeout(args.timeout())
        .rebalance(args.membership.rebalance());
    if let Some(token) = token {
        builder = builder.token(token);
    }
    if let Some(pem) = tls_ca.clone() {
        builder = builder.tls_ca(pem);
    }
    if let Some((cert, key)) = node_identity.clone() {
        builder = builder.tls_identity(cert, key);
    }
    let client = builder.build().await?;
    let reloader = ProxyReloader {
        front: security.reloader.clone(),
        token_file: args.token_file.clone(),
        tls_ca: args.tls_ca.clone().zip(tls_ca),
        client: client.clone(),
    };
    let backend = Arc::new(Backend::new(client, args.replicas));
    let listeners = Listeners {
        grpc: bind(args.grpc_listen, "gRPC").await?,
        resp: bind(args.resp_listen, "RESP").await?,
        admin: bind(args.admin_listen, "admin").await?,
    };
    tracing::info!(
        resp = %listeners.resp.local_addr()?,
        grpc = %listeners.grpc.local_addr()?,
        admin = %listeners.admin.local_addr()?,
        nodes = ?nodes,
        "listening"
    );
    // RESP and gRPC each get --max-connections: each must fit half of what
    // the descriptor limit leaves.
    let fd_limit =
        fds::raise_limit().map(|l| fds::RESERVED_FDS + l.saturating_sub(fds::RESERVED_FDS) / 2);
    let max_connections =
        fds::clamp_connections(args.max_connections, fd_limit, "--max-connections");
    let config = FrontendConfig {
        resp_limits: resp::Limits {
            max_bulk: usize::try_from(args.max_arg_bytes.0).unwrap_or(usize::MAX),
            ..resp::Limits::default()
        },
        max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        login_timeout: args.login_timeout.0,
        grpc_max_connections: max_connections,
        grpc_max_in_flight: args.max_in_flight,
        grpc_max_concurrent_streams: args.max_concurrent_streams,
        security,
        drain_delay: args.drain_delay.0,
        shutdown_grace: args.shutdown_grace.0,
    };
    let poller = discovery.map(|d| membership::spawn_with(d, backend.clone(), reloads.clone()));
    let (reload_stop, reload_stop_rx) = watch::channel(false);
    let reloading = tokio::spawn(reload::follow(
        reloads,
        backend.metrics.reloads.clone(),
        reload_stop_rx,
        move || reloader.reload(),
    ));
    let served = run(listeners, backend, config, shutdown_signal()).await;
    let _ = reload_stop.send(true);
    let _ = reloading.await;
    served?;
    if let Some(p) = poller {
        p.stop().await;
    }
    if let Some(dev) = dev {
        dev.stop().await;
    }
    Ok(())
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind the {what} listener on {addr}: {e}"))
}
