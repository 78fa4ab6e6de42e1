//! `dns://NAME:PORT`: every address `NAME` resolves to is a node at
//! `http://IP:PORT`. A Kubernetes headless Service resolves to its ready
//! pods' addresses, so pods joining and leaving change the ring at the next
//! poll. Resolution uses the system resolver (`tokio::net::lookup_host`),
//! so `/etc/hosts` and search domains apply.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::SourceError;

/// The node URLs `name` resolves to, sorted, without duplicates.
pub async fn resolve(name: &str, port: u16, timeout: Duration) -> Result<Vec<String>, SourceError> {
    let fail = |reason: String| SourceError::Dns {
        name: name.to_owned(),
        reason,
    };
    let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    Ok(urls(addrs))
}

/// `IP:PORT` for each address, sorted and deduplicated so that the
/// resolver's answer order does not matter. No scheme: the SDK adds the one
/// the proxy's TLS setting calls for (`https://` with `--tls-ca`), so a
/// token never crosses the network in clear because of a discovered name.
fn urls(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<String> {
    let mut addrs: Vec<SocketAddr> = addrs.into_iter().collect();
    addrs.sort_unstable();
    addrs.dedup();
    // SocketAddr's Display puts IPv6 addresses in brackets, as URLs need.
    addrs
        .iter()
        .take(distcache::MAX_NODES + 1)
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn addresses_become_sorted_urls() {
        let a: Vec<SocketAddr> = [
            "10.0.0.2:7001",
            "[::1]:7001",
            "10.0.0.1:7001",
            "10.0.0.2:7001",
        ]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
        assert_eq!(urls(a), ["10.0.0.1:7001", "10.0.0.2:7001", "[::1]:7001"]);
    }

    #[tokio::test]
    async fn localhost_resolves_and_garbage_fails() {
        let nodes = resolve("localhost", 7001, Duration::from_secs(5))
            .await
            .expect("localhost resolves");
        assert!(
            nodes
                .iter()
                .any(|n| n == "127.0.0.1:7001" || n == "[::1]:7001"),
            "{nodes:?}"
        );
        let e = resolve("no such name.invalid", 7001, Duration::from_secs(5))
            .await
            .expect_err("invalid name");
        assert!(e.to_string().contains("no such name.invalid"), "{e}");
    }
}
