//! `dns://NAME:PORT`: every address `NAME` resolves to is a node at
//! `http://IP:PORT`. A Kubernetes headless Service resolves to its ready
//! pods' addresses, so pods joining and leaving change the ring at the next
//! poll. With `--discovery-health-ids` the nodes are named by the id each
//! address reports (see [`super::health_ids`]).
//!
//! Also the [`Resolver`] that `dns://` and `dns+srv://` share: without
//! `--discovery-dns-server`, `dns://` uses the system resolver
//! (`tokio::net::lookup_host`, so `/etc/hosts`, nsswitch and search domains
//! apply) and `dns+srv://` uses hickory-resolver with `/etc/resolv.conf`'s
//! servers, search domains and options (and `/etc/hosts` for the targets'
//! addresses); with it, both ask that server alone with hickory-resolver,
//! over UDP and again over TCP when the answer was truncated.
//!
//! Every poll asks again: hickory-resolver's cache is off (answers live for
//! no time), so a change is seen at the next poll whatever the records'
//! TTLs, as with the system resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::error::SourceError;

/// How a membership source resolves names (see the module doc).
#[derive(Debug)]
pub struct Resolver {
    server: Option<SocketAddr>,
    timeout: Duration,
    /// Built on first use (reading `/etc/resolv.conf` may fail; it is then
    /// tried again at the next poll).
    hickory: Option<TokioResolver>,
}

impl Resolver {
    /// A resolver asking `server` (`None`: the system's), each lookup
    /// within `timeout`.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Self {
        Self {
            server,
            timeout,
            hickory: None,
        }
    }

    /// Every address of `name`, on `port`, sorted and deduplicated.
    pub async fn addresses(
        &mut self,
        name: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, SourceError> {
        let fail = |reason: String| SourceError::Dns {
            name: name.to_owned(),
            reason,
        };
        let timeout = self.timeout;
        let mut found: Vec<SocketAddr> = if self.server.is_some() {
            let hickory = self.hickory().map_err(fail)?;
            tokio::time::timeout(timeout, hickory.lookup_ip(name))
                .await
                .map_err(|_| fail(format!("no answer within {timeout:?}")))?
                .map_err(|e| fail(e.to_string()))?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()
        } else {
            tokio::time::timeout(timeout, tokio::net::lookup_host((name, port)))
                .await
                .map_err(|_| fail(format!("no answer within {timeout:?}")))?
                .map_err(|e| fail(e.to_string()))?
                .collect()
        };
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// The SRV records of `name` (answers, and the targets' addresses when
    /// the server sent them along), within the timeout.
    pub async fn srv(&mut self, name: &str) -> Result<Lookup, SourceError> {
        let fail = |reason: String| SourceError::Dns {
            name: name.to_owned(),
            reason,
        };
        let timeout = self.timeout;
        let hickory = self.hickory().map_err(fail)?;
        tokio::time::timeout(timeout, hickory.srv_lookup(name))
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))
    }

    /// Every address (A and AAAA) of each of the absolute host names
    /// `hosts`, sorted: looked up concurrently, all within the timeout.
    pub async fn ips(&mut self, hosts: &[String]) -> Result<Vec<Vec<IpAddr>>, SourceError> {
        let timeout = self.timeout;
        let hickory = self.hickory().map_err(|reason| SourceError::Dns {
            name: hosts.join(", "),
            reason,
        })?;
        let lookups = hosts.iter().map(|host| {
            let hickory = hickory.clone();
            async move {
                let mut ips: Vec<IpAddr> = hickory
                    .lookup_ip(host.as_str())
                    .await
                    .map_err(|e| SourceError::Dns {
                        name: host.clone(),
                        reason: e.to_string(),
                    })?
                    .iter()
                    .collect();
                ips.sort_unstable();
                ips.dedup();
                Ok(ips)
            }
        });
        tokio::time::timeout(timeout, futures_util::future::join_all(lookups))
            .await
            .map_err(|_| SourceError::Dns {
                name: hosts.join(", "),
                reason: format!("no answer within {timeout:?}"),
            })?
            .into_iter()
            .collect()
    }

    /// The hickory resolver (a cheap clone: its state is shared).
    fn hickory(&mut self) -> Result<TokioResolver, String> {
        if let Some(r) = &self.hickory {
            return Ok(r.clone());
        }
        let mut builder = match self.server {
            Some(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut server.connections {
                    c.port = addr.port();
                }
                let config = ResolverConfig::from_name_servers(vec![server]);
                let mut b =
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
                // That server alone answers, not the local hosts file.
                b.options_mut().use_hosts_file = ResolveHosts::Never;
                b
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
        };
        let o = builder.options_mut();
        // Two tries of a third of the poll's bound each leave room for the
        // TCP retry of a truncated answer.
        o.timeout = (self.timeout / 3).max(Duration::from_millis(100));
        o.attempts = 2;
        o.cache_size = 0;
        o.positive_max_ttl = Some(Duration::ZERO);
        o.negative_max_ttl = Some(Duration::ZERO);
        let resolver = builder.build().map_err(|e| e.to_string())?;
        self.hickory = Some(resolver.clone());
        Ok(resolver)
    }
}

/// `IP:PORT` for each address (sorted and deduplicated by
/// [`Resolver::addresses`], so the resolver's answer order does not
/// matter). No scheme: the SDK adds the one the proxy's TLS setting calls
/// for (`https://` with `--tls-ca`), so a token never crosses the network
/// in clear because of a discovered name.
pub fn urls(addrs: &[SocketAddr]) -> Vec<String> {
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
    fn addresses_become_urls() {
        let a: Vec<SocketAddr> = ["10.0.0.1:7001", "10.0.0.2:7001", "[::1]:7001"]
            .iter()
            .map(|s| s.parse().expect("addr"))
            .collect();
        assert_eq!(urls(&a), ["10.0.0.1:7001", "10.0.0.2:7001", "[::1]:7001"]);
    }

    #[tokio::test]
    async fn localhost_resolves_and_garbage_fails() {
        let mut r = Resolver::new(None, Duration::from_secs(5));
        let nodes = r
            .addresses("localhost", 7001)
            .await
            .expect("localhost resolves");
        assert!(
            nodes
                .iter()
                .any(|n| n.to_string() == "127.0.0.1:7001" || n.to_string() == "[::1]:7001"),
            "{nodes:?}"
        );
        assert!(nodes.windows(2).all(|w| w[0] < w[1]), "sorted: {nodes:?}");
        let e = r
            .addresses("no such name.invalid", 7001)
            .await
            .expect_err("invalid name");
        assert!(e.to_string().contains("no such name.invalid"), "{e}");
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_fails_within_the_timeout() {
        // A UDP port nobody answers on: bound here, never read.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut r = Resolver::new(
            Some(silent.local_addr().expect("addr")),
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        let e = r.srv("_grpc._tcp.nodes.test").await.expect_err("no answer");
        assert!(started.elapsed() < Duration::from_secs(3), "{e}");
        assert!(e.to_string().contains("_grpc._tcp.nodes.test"), "{e}");
    }
}
