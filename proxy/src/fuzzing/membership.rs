//! Membership sources: the cluster file and the HTTP discovery answer.

use std::path::Path;

use serde::Serialize;

use crate::membership::{MAX_NODES, Source, file, http};

#[derive(Serialize)]
struct ClusterFile<'a> {
    cluster: Cluster<'a>,
}

#[derive(Serialize)]
struct Cluster<'a> {
    nodes: &'a [String],
}

/// The `membership_file` target: `data` as a cluster file. Oracle: a file
/// that parses names at least one node, each trimmed and non-empty, and
/// the same list written back as TOML parses to the same list.
pub fn membership_file(data: &[u8]) {
    let path = Path::new("cluster.toml");
    let Ok(nodes) = file::parse(path, data) else {
        return;
    };
    check_nodes(&nodes, usize::MAX);
    let text = match toml::to_string(&ClusterFile {
        cluster: Cluster { nodes: &nodes },
    }) {
        Ok(t) => t,
        Err(e) => panic!("{nodes:?} cannot be written as TOML: {e}"),
    };
    match file::parse(path, text.as_bytes()) {
        Ok(again) => assert_eq!(again, nodes, "written as {text:?}"),
        Err(e) => panic!("{nodes:?} written as {text:?} does not parse: {e}"),
    }
}

/// The `membership_http` target: `data` as a discovery answer, and (when it
/// is UTF-8) as a `--discovery` value. Oracle: an answer that parses names
/// 1 to `MAX_NODES` nodes, each trimmed and non-empty, and the same list
/// sent back as a plain JSON array parses to the same list; a discovery
/// value that parses prints as one that parses to the same source.
pub fn membership_http(data: &[u8]) {
    if let Ok(nodes) = http::parse(data) {
        check_nodes(&nodes, MAX_NODES);
        let json = match serde_json::to_vec(&nodes) {
            Ok(j) => j,
            Err(e) => panic!("{nodes:?} cannot be written as JSON: {e}"),
        };
        match http::parse(&json) {
            Ok(again) => assert_eq!(again, nodes),
            Err(e) => panic!("{nodes:?} sent back as a URL list does not parse: {e}"),
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(source) = Source::parse_discovery(text) {
        let shown = source.to_string();
        match Source::parse_discovery(&shown) {
            Ok(again) => assert_eq!(again, source, "{text:?} shows as {shown:?}"),
            Err(e) => panic!("{text:?} shows as {shown:?}, which does not parse: {e}"),
        }
    }
}

fn check_nodes(nodes: &[String], max: usize) {
    assert!(!nodes.is_empty(), "an empty node list was accepted");
    assert!(nodes.len() <= max, "{} nodes accepted", nodes.len());
    for n in nodes {
        assert!(!n.is_empty() && n.trim() == n, "node {n:?} is not trimmed");
    }
}
