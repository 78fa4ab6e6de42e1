//! Every command line the deployment files give `distcache-node` and
//! `distcache-proxy` (Kubernetes manifests and overlays, docker-compose.yml,
//! the Dockerfile's CMD, the systemd units) parses with today's flags, and,
//! where it needs no file, makes a valid configuration. A flag renamed in
//! code but not in `deploy/` fails here.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use clap::Parser;

const FILES: [(&str, &str); 9] = [
    (
        "deploy/kubernetes/base/node-statefulset.yaml",
        include_str!("../../deploy/kubernetes/base/node-statefulset.yaml"),
    ),
    (
        "deploy/kubernetes/base/app-deployment.yaml",
        include_str!("../../deploy/kubernetes/base/app-deployment.yaml"),
    ),
    (
        "deploy/kubernetes/overlays/secure/node-security.yaml",
        include_str!("../../deploy/kubernetes/overlays/secure/node-security.yaml"),
    ),
    (
        "deploy/kubernetes/overlays/secure/proxy-security.yaml",
        include_str!("../../deploy/kubernetes/overlays/secure/proxy-security.yaml"),
    ),
    (
        "docker-compose.yml",
        include_str!("../../docker-compose.yml"),
    ),
    ("Dockerfile", include_str!("../../Dockerfile")),
    (
        "deploy/systemd/distcache-node.service",
        include_str!("../../deploy/systemd/distcache-node.service"),
    ),
    (
        "deploy/systemd/distcache-proxy.service",
        include_str!("../../deploy/systemd/distcache-proxy.service"),
    ),
    (
        "deploy/kubernetes/overlays/secure/kustomization.yaml",
        include_str!("../../deploy/kubernetes/overlays/secure/kustomization.yaml"),
    ),
];

/// The command lines in `text`: (binary, flags).
fn command_lines(file: &str, text: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let binary_of = |s: &str| {
        ["distcache-node", "distcache-proxy"]
            .into_iter()
            .find(|b| s.contains(b))
            .map(str::to_owned)
    };
    if file.ends_with(".yaml") {
        // Kubernetes: `command: ["distcache-…"]` then `args:` lines `- --flag=…`,
        // or JSON patches adding `value: --flag=…` to a container's args.
        let binary = match text.find("command: [\"distcache-") {
            Some(at) => binary_of(&text[at..at + 40]).unwrap(),
            None if text.contains("/initContainers/0/args/") => "distcache-proxy".into(),
            None => "distcache-node".into(),
        };
        let flags: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix("- --").or(l.strip_prefix("value: --")))
            .map(|f| format!("--{f}"))
            .collect();
        if !flags.is_empty() {
            found.push((binary, flags));
        }
    } else if file.ends_with(".service") {
        for line in text.lines() {
            let Some(cmd) = line
                .strip_prefix("ExecStart=")
                .or(line.strip_prefix("ExecStartPre="))
            else {
                continue;
            };
            let mut words = cmd.split_whitespace();
            let binary = binary_of(words.next().unwrap()).unwrap();
            found.push((binary, words.map(str::to_owned).collect()));
        }
    } else {
        // docker-compose.yml's `command: [...]` and the Dockerfile's CMD [...].
        let mut rest = text;
        while let Some(at) = rest.find("[\"distcache-") {
            let end = at + rest[at..].find(']').unwrap();
            let words: Vec<String> = rest[at + 1..end]
                .split(',')
                .map(|w| w.trim().trim_matches('"').to_owned())
                .collect();
            found.push((words[0].clone(), words[1..].to_vec()));
            rest = &rest[end..];
        }
    }
    found
}

#[test]
fn every_command_line_in_the_deployment_files_parses_with_todays_flags() {
    let mut checked = 0;
    for (file, text) in FILES {
        for (binary, flags) in command_lines(file, text) {
            let argv = std::iter::once(binary.clone()).chain(flags.iter().cloned());
            let reads_a_file = flags.iter().any(|f| f.starts_with("--config"));
            match binary.as_str() {
                "distcache-node" => {
                    let args = distcache_node::cli::Args::try_parse_from(argv)
                        .unwrap_or_else(|e| panic!("{file}: distcache-node {flags:?}: {e}"));
                    if !reads_a_file {
                        args.into_config()
                            .unwrap_or_else(|e| panic!("{file}: distcache-node {flags:?}: {e}"));
                    }
                }
                "distcache-proxy" => {
                    let argv: Vec<String> = argv.collect();
                    // A sidecar's node list comes from its --config file.
                    let args = distcache_proxy::cli::Args::try_parse_from(&argv)
                        .or_else(|_| {
                            distcache_proxy::cli::Args::try_parse_from(
                                argv.iter().cloned().chain(["--config=c.toml".to_owned()]),
                            )
                        })
                        .unwrap_or_else(|e| panic!("{file}: distcache-proxy {flags:?}: {e}"));
                    args.front_tls()
                        .unwrap_or_else(|e| panic!("{file}: distcache-proxy {flags:?}: {e}"));
                }
                other => panic!("{file}: unknown binary {other:?}"),
            }
            checked += 1;
        }
    }
    // 3 compose nodes + compose proxy + CMD + 2 node units + proxy unit +
    // StatefulSet + sidecar + 2 patches.
    assert!(checked >= 12, "found only {checked} command lines");
}
