//! Named node entries, `NAME=IP:PORT`, as `dns+srv://` and
//! `--discovery-health-ids` build them: what a name must be to place a node
//! on the ring, and the checks on the whole list (one address per name, one
//! name per address). A source refuses a list that fails them, naming the
//! addresses, before the SDK sees it; the SDK would refuse it too, but only
//! after start-up had begun, and less clearly.
//!
//! Pure: no I/O, no tokio.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use super::error::SourceError;

/// Longest node name, in bytes: the SDK's limit on the id of an `ID=URL`
/// entry.
pub(super) const MAX_NAME_BYTES: usize = 255;

/// Why `name` cannot name a node, if it cannot. The SDK reads an entry as
/// `ID=URL` only when the part before the first `=` holds no `:` and no
/// `/` (otherwise the whole entry is a URL), so a name with either, or
/// with `=` or a space, would not be read as the name it is.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the name is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| matches!(c, ':' | '/' | '=') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name:?} cannot name a node (it holds {c:?}; a name has no ':', '/', '=' or spaces)"
        ));
    }
    Ok(())
}

/// `NAME=IP:PORT` for each (name, address), sorted by name, duplicates
/// dropped. Refused when a name cannot name a node, when one name is at two
/// addresses or one address has two names, or when there are more than
/// [`distcache::MAX_NODES`] nodes; `hint` (how to fix it) ends the
/// message.
pub(super) fn entries(
    named: impl IntoIterator<Item = (String, SocketAddr)>,
    hint: &str,
) -> Result<Vec<String>, SourceError> {
    let fail = |why: String| SourceError::Naming(format!("{why}{hint}"));
    // Sorted first, so that which pair a refusal names does not depend on
    // the order of the answer.
    let mut named: Vec<(String, SocketAddr)> = named.into_iter().collect();
    named.sort_unstable();
    named.dedup();
    let mut by_name: BTreeMap<&str, SocketAddr> = BTreeMap::new();
    let mut by_addr: HashMap<SocketAddr, &str> = HashMap::new();
    for (name, addr) in &named {
        check_name(name).map_err(|why| fail(format!("the node at {addr}: {why}")))?;
        if let Some(other) = by_name.insert(name, *addr) {
            return Err(fail(format!("{other} and {addr} are both named {name:?}")));
        }
        if let Some(other) = by_addr.insert(*addr, name) {
            return Err(fail(format!("{addr} is named both {other:?} and {name:?}")));
        }
        if by_name.len() > distcache::MAX_NODES {
            return Err(SourceError::TooMany(by_name.len()));
        }
    }
    // SocketAddr's Display puts IPv6 addresses in brackets, as URLs need.
    Ok(by_name
        .into_iter()
        .map(|(name, addr)| format!("{name}={addr}"))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn at(name: &str, addr: &str) -> (String, SocketAddr) {
        (name.to_owned(), addr.parse().expect("addr"))
    }

    #[test]
    fn entries_are_sorted_by_name_and_deduplicated() {
        let got = entries(
            [
                at("node-b", "10.0.0.2:7001"),
                at("node-a", "[fe80::1]:7001"),
                at("node-b", "10.0.0.2:7001"),
            ],
            "",
        )
        .expect("valid");
        assert_eq!(got, ["node-a=[fe80::1]:7001", "node-b=10.0.0.2:7001"]);
    }

    #[test]
    fn a_name_at_two_addresses_or_an_address_under_two_names_is_refused() {
        let e = entries(
            [at("n", "10.0.0.2:7001"), at("n", "10.0.0.1:7001")],
            " (fix it)",
        )
        .expect_err("one name, two addresses");
        assert_eq!(
            e.to_string(),
            "cannot name the nodes: 10.0.0.1:7001 and 10.0.0.2:7001 are both named \"n\" (fix it)"
        );
        let e = entries([at("a", "10.0.0.1:7001"), at("b", "10.0.0.1:7001")], "")
            .expect_err("one address, two names");
        assert!(e.to_string().contains("10.0.0.1:7001 is named both"), "{e}");
    }

    #[test]
    fn names_the_sdk_would_misread_are_refused() {
        for bad in [
            "",
            "0.0.0.0:7001",
            "a/b",
            "a=b",
            "a b",
            "a\u{7}",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
            assert!(entries([at(bad, "10.0.0.1:7001")], "").is_err(), "{bad:?}");
        }
        for good in [
            "distcache-0.distcache.default.svc.cluster.local",
            "cache-1",
            "x",
        ] {
            check_name(good).expect(good);
        }
        let e = entries([at("0.0.0.0:7001", "10.0.0.1:7001")], "").expect_err("port");
        assert!(e.to_string().contains("the node at 10.0.0.1:7001"), "{e}");
    }

    #[test]
    fn more_than_max_nodes_is_refused() {
        let many = (0..=distcache::MAX_NODES as u32).map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            (format!("n{i}"), SocketAddr::from((ip, 7001)))
        });
        assert!(matches!(entries(many, ""), Err(SourceError::TooMany(_))));
    }
}
