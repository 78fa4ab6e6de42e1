//! `--discovery-health-ids` for `dns://NAME:PORT`: each address the name
//! resolves to is asked for its `HealthCheck` answer, and the node there is
//! named by the `node_id` it reports (`ID=IP:PORT`), so that a node whose
//! address changes keeps its place on the ring. Opt-in, because a node's
//! default id is its listen address, often `0.0.0.0:7001` on every pod:
//! each node needs its own `--node-id` (e.g. its pod name).
//!
//! - Ids are remembered per address between polls: an address that does not
//!   answer keeps the id it last reported (the SDK's own health checks skip
//!   the node meanwhile), and one that has never answered is left out, with
//!   a warning, until it does: a node joins once it answers.
//! - Two addresses reporting one id, or an id that cannot name a node (one
//!   with `:`, `/`, `=` or spaces, such as the default `0.0.0.0:7001`),
//!   refuse the whole answer: the current membership is kept.
//! - The probes run concurrently, each within the fetch timeout, over one
//!   lazily connected channel per address kept between polls, with the
//!   proxy's CA (`https://` with `--tls-ca`) and token ([`NodeAccess`]), so
//!   a node accepts them whenever it accepts the proxy's requests.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use distcache_proto::v1::HealthCheckRequest;
use distcache_proto::v1::cache_service_client::CacheServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::entry;
use super::error::SourceError;

/// What ends a refusal: how to give each node its own id.
const HINT: &str =
    "; with --discovery-health-ids every node needs its own --node-id (e.g. its pod name)";

/// How the probes reach the nodes: the proxy's own upstream settings, read
/// by `main` (the same `--tls-ca` and `--token-file` the SDK client gets).
#[derive(Clone, Default)]
pub struct NodeAccess {
    /// PEM CA bundle: probe `https://IP:PORT`, trusting it; `None`: `http://`.
    pub tls_ca: Option<Vec<u8>>,
    /// PEM certificate and key presented to nodes that require one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Bearer token sent with each probe (`HealthCheck` needs the
    /// `readonly` role when the nodes require tokens).
    pub token: Option<String>,
}

impl fmt::Debug for NodeAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeAccess")
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "<pem>"))
            .field("identity", &self.identity.as_ref().map(|_| "<pem>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The probes of one `dns://` source and what they learnt.
pub struct Prober {
    tls_ca: Option<Certificate>,
    identity: Option<Identity>,
    auth: Option<MetadataValue<Ascii>>,
    known: HashMap<SocketAddr, Known>,
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prober")
            .field("tls", &self.tls_ca.is_some())
            .field("token", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("known", &self.known)
            .finish()
    }
}

/// One address: its channel, and the id it last reported.
#[derive(Debug)]
struct Known {
    channel: Result<Channel, String>,
    id: Option<String>,
}

impl Prober {
    /// Probes with `access`.
    pub fn new(access: &NodeAccess) -> Self {
        Self {
            tls_ca: access.tls_ca.as_ref().map(Certificate::from_pem),
            identity: access
                .identity
                .as_ref()
                .map(|(cert, key)| Identity::from_pem(cert, key)),
            // A token that is no header value is refused by the SDK client
            // built from the same file, before any poll.
            auth: access
                .token
                .as_ref()
                .and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok()),
            known: HashMap::new(),
        }
    }

    /// The `ID=IP:PORT` entries for `addrs`, sorted: each address is asked
    /// its node id, concurrently, each within `timeout`.
    pub async fn name(
        &mut self,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Vec<String>, SourceError> {
        self.known.retain(|a, _| addrs.contains(a));
        for &addr in addrs {
            if !self.known.contains_key(&addr) {
                let channel = self.channel(addr, timeout);
                self.known.insert(addr, Known { channel, id: None });
            }
        }
        let probes = addrs.iter().map(|&addr| {
            let channel = self.known.get(&addr).map(|k| k.channel.clone());
            let auth = self.auth.clone();
            async move {
                let answer = match channel {
                    Some(Ok(c)) => probe(c, auth, timeout).await,
                    Some(Err(e)) => Err(e),
                    None => Err("no channel".to_owned()),
                };
                (addr, answer)
            }
        });
        let answers = futures_util::future::join_all(probes).await;
        let mut named = Vec::with_capacity(answers.len());
        for (addr, answer) in answers {
            let Some(known) = self.known.get_mut(&addr) else {
                continue;
            };
            match (answer, &known.id) {
                (Ok(id), _) => {
                    known.id = Some(id.clone());
                    named.push((id, addr));
                }
                (Err(error), Some(id)) => {
                    tracing::debug!(%addr, node_id = %id, %error, "no HealthCheck answer; keeping the id it last reported");
                    named.push((id.clone(), addr));
                }
                (Err(error), None) => tracing::warn!(
                    %addr,
                    %error,
                    "no HealthCheck answer and no id known; left out until it answers"
                ),
            }
        }
        if named.is_empty() {
            return Err(SourceError::Naming(format!(
                "none of {} addresses answered HealthCheck with its node id",
                addrs.len()
            )));
        }
        entry::entries(named, HINT)
    }

    /// A lazily connected channel to `addr`, the way the SDK reaches nodes.
    fn channel(&self, addr: SocketAddr, timeout: Duration) -> Result<Channel, String> {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| e.to_string())?;
        if let Some(ca) = &self.tls_ca {
            let mut tls = ClientTlsConfig::new().ca_certificate(ca.clone());
            if let Some(id) = &self.identity {
                tls = tls.identity(id.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS settings: {e}"))?;
        }
        Ok(endpoint
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy())
    }
}

/// The node id `HealthCheck` reports on `channel`, within `timeout`.
async fn probe(
    channel: Channel,
    auth: Option<MetadataValue<Ascii>>,
    timeout: Duration,
) -> Result<String, String> {
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    req.set_timeout(timeout);
    if let Some(a) = auth {
        req.metadata_mut().insert("authorization", a);
    }
    let mut client = CacheServiceClient::new(channel);
    match tokio::time::timeout(timeout, client.health_check(req)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Ok(Ok(answer)) => Ok(answer.into_inner().node_id),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let access = NodeAccess {
            tls_ca: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            identity: Some((b"cert".to_vec(), b"secret-key".to_vec())),
            token: Some("secret-token".into()),
        };
        let shown = format!("{access:?} {:?}", Prober::new(&access));
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(!shown.contains("secret-key"), "{shown}");
    }

    #[tokio::test]
    async fn addresses_that_never_answered_are_left_out() {
        // Bound and closed: connections there are refused at once.
        let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = gone.local_addr().expect("addr");
        drop(gone);
        let mut p = Prober::new(&NodeAccess::default());
        let e = p
            .name(&[addr], Duration::from_secs(2))
            .await
            .expect_err("nobody answers");
        assert!(
            e.to_string().contains("none of 1 addresses answered"),
            "{e}"
        );
        // A remembered id stands in for a missing answer.
        p.known.get_mut(&addr).expect("known").id = Some("cache-a".into());
        assert_eq!(
            p.name(&[addr], Duration::from_secs(2))
                .await
                .expect("remembered"),
            [format!("cache-a={addr}")]
        );
        // An address that is no longer resolved is forgotten.
        let _ = p.name(&[], Duration::from_secs(2)).await;
        assert!(p.known.is_empty());
    }
}
