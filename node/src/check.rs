//! `distcache-node --check-config`: every check start-up makes before it
//! touches the data directory or a port, without starting, as `nginx -t`
//! and twemproxy's `-t` do. The configuration is parsed and validated, the
//! TLS certificate and key are loaded and the token secrets read; the
//! effective configuration is returned for printing, secrets shown only as
//! their key ids. It does not bind the listeners, lock the data directory or
//! replay the WAL.

use distcache_serve::security::{Bounds, Security, SecurityCounters, SecurityError};

use crate::config::{ConfigError, NodeConfig};
use crate::server::NodeError;

/// Checks `config` as start-up would; returns the effective configuration
/// (Rust's debug form, secrets redacted) or the first error.
pub fn check(config: &NodeConfig) -> Result<String, NodeError> {
    config.validate()?;
    let bounds = Bounds {
        max_connections: config.server.max_connections,
        max_in_flight: config.server.max_in_flight,
    };
    Security::from_config(
        &config.tls,
        &config.auth,
        &config.rate_limit,
        bounds,
        &SecurityCounters::default(),
    )?;
    // Read a second time for the report: the ids only, never a secret.
    let keys = config.auth.load_keys().map_err(SecurityError::Auth)?;
    if let Some(dir) = &config.wal.data_dir
        && dir.exists()
        && !dir.is_dir()
    {
        return Err(ConfigError::Invalid(format!(
            "data_dir {} exists and is not a directory",
            dir.display()
        ))
        .into());
    }
    Ok(format!(
        "# distcache-node effective configuration (secrets show as key ids only)\n\
         {config:#?}\n# token keys loaded: {keys:?}"
    ))
}
