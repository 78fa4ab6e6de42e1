#!/usr/bin/env python3
"""Checks deploy/grafana/distcache.json beyond "it is JSON": unique panel
ids, panels that do not overlap, every query's variables defined, and every
query valid PromQL. For the last, writes the queries (variables replaced)
as recording rules to the file given as the second argument, for
`promtool check rules`.

    check_dashboard.py deploy/grafana/distcache.json /tmp/dashboard-rules.yml
"""
import json
import re
import sys

path, rules_out = sys.argv[1], sys.argv[2]
dash = json.load(open(path))
errors = []
for key in ("title", "uid", "panels", "templating", "schemaVersion"):
    if key not in dash:
        errors.append(f"no {key}")
defined = {v["name"] for v in dash["templating"]["list"]}
builtin = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
ids, cells, exprs = set(), {}, []
for p in dash["panels"]:
    if p["id"] in ids:
        errors.append(f"panel id {p['id']} used twice")
    ids.add(p["id"])
    g = p["gridPos"]
    if g["x"] + g["w"] > 24:
        errors.append(f"panel {p['title']!r} is wider than the grid")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                errors.append(f"panels {cells[(x, y)]!r} and {p['title']!r} overlap")
                break
            cells[(x, y)] = p["title"]
        else:
            continue
        break
    if p["type"] == "row":
        continue
    if not p.get("targets"):
        errors.append(f"panel {p['title']!r} has no query")
    for t in p.get("targets", []):
        e = t["expr"]
        for var in re.findall(r"\$(\w+)", e):
            if var not in defined and var not in builtin:
                errors.append(f"panel {p['title']!r} uses undefined ${var}")
        for name, value in builtin.items():
            e = e.replace("$" + name, value)
        e = re.sub(r"\$\w+", ".*", e)
        exprs.append((p["title"], e))
with open(rules_out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
if errors:
    sys.exit("\n".join(errors))
print(f"  {len(dash['panels'])} panels, {len(exprs)} queries")
