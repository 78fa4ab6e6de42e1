//! The TOML cluster file of `--config FILE`:
//!
//! ```toml
//! [cluster]
//! # The nodes' gRPC URLs; `host:port` means `http://host:port`. An entry
//! # `ID=URL` places the node on the ring by ID, whatever its address.
//! nodes = ["http://10.0.0.1:7001", "cache-1=http://10.0.0.2:7001"]
//! ```
//!
//! Unknown keys are refused (a typo such as `node = [...]` is an error, not
//! an empty cluster), and so is an empty list.
//!
//! The poller re-reads the file every second and compares its *content*
//! with the last read rather than watching it with inotify: content survives
//! what defeats file watches and mtimes (editors that write a new file and
//! rename it over the old one, Kubernetes ConfigMap volumes that swap a
//! `..data` symlink, filesystems with one-second mtimes), costs one small
//! read a second, and needs no extra crate. SIGHUP re-reads it at once.

use std::path::Path;

use serde::Deserialize;

use super::error::SourceError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    cluster: Cluster,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cluster {
    nodes: Vec<String>,
}

/// The node URLs of the cluster file `path` whose content is `bytes`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<String>, SourceError> {
    let bad = |reason: String| SourceError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let file: ClusterFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let nodes: Vec<String> = file
        .cluster
        .nodes
        .into_iter()
        .map(|n| n.trim().to_owned())
        .collect();
    if nodes.is_empty() {
        return Err(bad("[cluster] nodes is empty".into()));
    }
    if nodes.iter().any(String::is_empty) {
        return Err(bad("[cluster] nodes holds an empty string".into()));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn p(text: &str) -> Result<Vec<String>, String> {
        parse(Path::new("cluster.toml"), text.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_file_lists_its_nodes() {
        let text = "# comment\n[cluster]\nnodes = [\n  \"http://10.0.0.1:7001\",\n  \" 10.0.0.2:7001 \",\n]\n";
        assert_eq!(
            p(text).expect("valid"),
            ["http://10.0.0.1:7001", "10.0.0.2:7001"]
        );
    }

    #[test]
    fn bad_cluster_files_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "missing field `cluster`"),
            ("[cluster]\n", "missing field `nodes`"),
            ("[cluster]\nnodes = []\n", "empty"),
            ("[cluster]\nnodes = [\"\"]\n", "empty string"),
            (
                "[cluster]\nnode = [\"http://a:1\"]\n",
                "unknown field `node`",
            ),
            ("nodes = [\"http://a:1\"]\n", "unknown field `nodes`"),
            ("[cluster]\nnodes = \"http://a:1\"\n", "invalid type"),
            ("[cluster]\nnodes = [1, 2]\n", "invalid type"),
            ("[cluster\nnodes = [\"http://a:1\"]\n", "cluster.toml"),
        ] {
            let e = p(text).expect_err(text);
            assert!(
                e.contains(why) && e.contains("cluster.toml"),
                "{text:?}: {e}"
            );
        }
        let e = parse(Path::new("c.toml"), b"[cluster]\nnodes = [\"\xff\"]").expect_err("utf8");
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }
}
