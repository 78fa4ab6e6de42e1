#!/usr/bin/env python3
"""What kubernetes-validate cannot see in the rendered manifests: the rules
distcache's deployment depends on. Reads `kubectl kustomize` output on stdin.

- the cluster file names exactly the StatefulSet's pods by their stable DNS
  names (pod.service, or pod.service.namespace.svc...), one per replica;
- the headless Service publishes not-ready addresses and selects the pods;
- the PodDisruptionBudget selects the node pods;
- every container runs as non-root with a read-only root file system, no
  privilege escalation, all capabilities dropped, resource requests and
  limits, and /livez and /readyz probes on its admin port (the sample
  application's own container is exempt from the probes);
- the proxy is a native sidecar (an init container with restartPolicy Always).
"""
import re
import sys

import yaml

errors = []


def fail(msg):
    errors.append(msg)


docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)


def one(kind, name):
    for d in by_kind.get(kind, []):
        if d["metadata"]["name"] == name:
            return d
    fail(f"no {kind} {name}")
    return None


sts = one("StatefulSet", "distcache-node")
svc = one("Service", "distcache-node")
pdb = one("PodDisruptionBudget", "distcache-node")
cm = one("ConfigMap", "distcache-cluster")
app = one("Deployment", "distcache-sample-app")
if errors:
    sys.exit("\n".join(errors))

labels = sts["spec"]["template"]["metadata"]["labels"]


def selects(selector):
    return all(labels.get(k) == v for k, v in selector.items())


# Service and PDB
if svc["spec"].get("clusterIP") != "None":
    fail("Service distcache-node must be headless (clusterIP: None)")
if svc["spec"].get("publishNotReadyAddresses") is not True:
    fail("Service distcache-node needs publishNotReadyAddresses: true")
if not selects(svc["spec"]["selector"]):
    fail("Service distcache-node does not select the node pods")
if sts["spec"]["serviceName"] != svc["metadata"]["name"]:
    fail("StatefulSet serviceName is not the headless Service")
if not selects(pdb["spec"]["selector"]["matchLabels"]):
    fail("PodDisruptionBudget does not select the node pods")

# Cluster file = the StatefulSet's pods by DNS name
toml = cm["data"]["cluster.toml"]
names = re.findall(r'"(https?)://([^":/]+):(\d+)"', toml)
want = {f"{sts['metadata']['name']}-{i}.{svc['metadata']['name']}" for i in range(sts["spec"]["replicas"])}
# pod.service, or its longer forms pod.service.namespace.svc[.cluster.local]
got = {".".join(host.split(".")[:2]) for _, host, _ in names}
if len(names) != len(got):
    fail(f"cluster.toml names a pod twice: {names}")
if got != want:
    fail(f"cluster.toml names {sorted(got)}, the StatefulSet's pods are {sorted(want)}")
ports = {int(p) for _, _, p in names}
grpc_ports = {p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"}
if ports != grpc_ports:
    fail(f"cluster.toml uses ports {sorted(ports)}, the Service's grpc port is {sorted(grpc_ports)}")
if not sts["spec"].get("volumeClaimTemplates"):
    fail("StatefulSet has no volumeClaimTemplates for --data-dir")


def check_container(where, c, pod_sc, probes=True):
    sc = c.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        fail(f"{where}: not runAsNonRoot")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{where}: root file system is not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        fail(f"{where}: capabilities not dropped")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(part, {}):
                fail(f"{where}: no {part}.{r}")
    if not probes:
        return
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")):
        got = c.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            fail(f"{where}: {probe} should GET {path}, has {got}")


spec = sts["spec"]["template"]["spec"]
for c in spec["containers"]:
    check_container(f"StatefulSet/{c['name']}", c, spec.get("securityContext", {}))
spec = app["spec"]["template"]["spec"]
sidecars = [c for c in spec.get("initContainers", []) if c.get("command", [""])[0] == "distcache-proxy"]
if not sidecars:
    fail("the sample application has no distcache-proxy init container")
for c in sidecars:
    if c.get("restartPolicy") != "Always":
        fail("distcache-proxy is not a native sidecar (restartPolicy: Always)")
    check_container(f"Deployment/{c['name']}", c, spec.get("securityContext", {}))
for c in spec["containers"]:
    check_container(f"Deployment/{c['name']}", c, spec.get("securityContext", {}), probes=False)

for d in (sts, app):
    ann = d["spec"]["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or "prometheus.io/port" not in ann:
        fail(f"{d['kind']}/{d['metadata']['name']}: no prometheus.io scrape annotations")

if errors:
    sys.exit("\n".join(errors))
print(f"  {len(docs)} resources: cluster file, Service, PDB, security contexts, probes, sidecar ok")
