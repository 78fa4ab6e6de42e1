//! `dns+srv://NAME`: an SRV query for `NAME` every interval. Each record's
//! target is a node, named by the target host name (lower-case, without the
//! trailing dot) and reached at `IP:PORT`, the target's address and the
//! record's port: the entry handed to the SDK is `NAME=IP:PORT`. A node
//! that comes back at another address under the same name (a StatefulSet
//! pod restarted on a new IP) is reconnected there and keeps its place on
//! the ring.
//!
//! Kubernetes publishes `_PORT._tcp.SERVICE.NAMESPACE.svc.cluster.local`
//! for each named port of a headless Service, one record per pod; the
//! targets of a StatefulSet's pods (whose `serviceName` is that Service) are
//! their stable names, `POD.SERVICE.NAMESPACE.svc.cluster.local`. Other pods
//! get names made from their IP, which change with it. Consul's DNS
//! interface answers `SERVICE.service.consul` the same way, each target
//! named by its node.
//!
//! A target's address comes from the answer's additional A/AAAA records
//! (CoreDNS and Consul send them), else from an A/AAAA lookup of the
//! target; a target with several is reached at the lowest (IPv4 first). A
//! target that has none refuses the whole answer (the current membership
//! is kept) rather than dropping the node from the ring for a poll.
//! Priority and weight are ignored: every target is a node. A target of
//! `.` ("no such service here", RFC 2782) is skipped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::rr::{Name, RData, Record};

use super::dns::Resolver;
use super::entry;
use super::error::SourceError;

/// The `NAME=IP:PORT` entries of the SRV records of `name`, sorted.
pub async fn resolve(dns: &mut Resolver, name: &str) -> Result<Vec<String>, SourceError> {
    let lookup = dns.srv(name).await?;
    let targets = targets(lookup.answers());
    if targets.is_empty() {
        return Err(SourceError::Dns {
            name: name.to_owned(),
            reason: "no SRV record names a target".into(),
        });
    }
    // Refused before any lookup of a target, not after thousands of them.
    if targets.len() > distcache::MAX_NODES {
        return Err(SourceError::TooMany(targets.len()));
    }
    let mut addrs = addresses(lookup.additionals());
    let missing: Vec<String> = targets
        .iter()
        .filter(|(host, _)| !addrs.contains_key(host))
        .map(|(host, _)| host.clone())
        .collect();
    if !missing.is_empty() {
        // Absolute names: the search domains do not apply.
        let absolute: Vec<String> = missing.iter().map(|h| format!("{h}.")).collect();
        for (host, ips) in missing.into_iter().zip(dns.ips(&absolute).await?) {
            addrs.insert(host, ips);
        }
    }
    let named = targets
        .into_iter()
        .map(
            |(host, port)| match addrs.get(&host).and_then(|ips| ips.first()) {
                Some(ip) => Ok((host, SocketAddr::new(*ip, port))),
                None => Err(SourceError::Dns {
                    name: host,
                    reason: format!("the SRV target of {name} has no address"),
                }),
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    entry::entries(named, "")
}

/// A target's node name: its host name, lower-case, without the trailing
/// dot; `None` for the root (`.`, no service).
fn node_name(target: &Name) -> Option<String> {
    if target.is_root() {
        return None;
    }
    let name = target.to_lowercase().to_ascii();
    Some(name.trim_end_matches('.').to_owned())
}

/// (node name, port) of each SRV record among `answers`, deduplicated.
fn targets(answers: &[Record]) -> Vec<(String, u16)> {
    let mut targets: Vec<(String, u16)> = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((node_name(&srv.target)?, srv.port)),
            _ => None,
        })
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// Each host's addresses among the A/AAAA `records`, sorted (IPv4 first).
fn addresses(records: &[Record]) -> HashMap<String, Vec<IpAddr>> {
    let mut by_host: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for r in records {
        let ip = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        if let Some(host) = node_name(&r.name) {
            by_host.entry(host).or_default().push(ip);
        }
    }
    for ips in by_host.values_mut() {
        ips.sort_unstable();
        ips.dedup();
    }
    by_host
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, SRV};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn srv(target: &str, port: u16) -> Record {
        let data = RData::SRV(SRV::new(10, 50, port, name(target)));
        Record::from_rdata(
            name("_grpc._tcp.distcache.default.svc.cluster.local."),
            5,
            data,
        )
    }

    fn a(host: &str, ip: &str) -> Record {
        let data = match ip.parse::<IpAddr>().expect("ip") {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        Record::from_rdata(name(host), 5, data)
    }

    #[test]
    fn targets_are_named_by_their_host_lower_case_without_the_dot() {
        let answers = [
            srv("distcache-1.distcache.default.svc.cluster.local.", 7001),
            srv("Distcache-0.Distcache.Default.svc.cluster.local.", 7001),
            srv("distcache-1.distcache.default.svc.cluster.local.", 7001),
            srv(".", 7001),
            Record::from_rdata(
                name("alias.example."),
                5,
                RData::CNAME(CNAME(name("distcache.example."))),
            ),
        ];
        assert_eq!(
            targets(&answers),
            [
                (
                    "distcache-0.distcache.default.svc.cluster.local".to_owned(),
                    7001
                ),
                (
                    "distcache-1.distcache.default.svc.cluster.local".to_owned(),
                    7001
                ),
            ]
        );
    }

    #[test]
    fn additional_records_give_each_target_its_addresses() {
        let additionals = [
            a("distcache-0.distcache.test.", "fd00::1"),
            a("DISTCACHE-0.distcache.test.", "10.0.0.9"),
            a("distcache-0.distcache.test.", "10.0.0.1"),
            a("distcache-1.distcache.test.", "10.0.0.2"),
            srv("distcache-1.distcache.test.", 7001),
        ];
        let by_host = addresses(&additionals);
        assert_eq!(by_host.len(), 2);
        let ips = |h: &str| -> Vec<String> { by_host[h].iter().map(ToString::to_string).collect() };
        assert_eq!(
            ips("distcache-0.distcache.test"),
            ["10.0.0.1", "10.0.0.9", "fd00::1"]
        );
        assert_eq!(ips("distcache-1.distcache.test"), ["10.0.0.2"]);
    }

    #[test]
    fn one_target_at_two_ports_is_refused() {
        // What `resolve` hands `entry::entries` for such an answer.
        let t = targets(&[srv("n.test.", 7001), srv("n.test.", 7002)]);
        let named = t
            .into_iter()
            .map(|(h, p)| (h, SocketAddr::from(([10, 0, 0, 1], p))));
        let e = entry::entries(named, "").expect_err("two ports");
        assert!(e.to_string().contains("both named \"n.test\""), "{e}");
    }
}
