#!/usr/bin/env python3
"""Prints docs/evaluation.md's "Rules vs ml" table from an evaluation report's metrics.json.

    python3 ops/readme_table.py [target/evaluation/report/metrics.json]

One row per scenario and surface: rules and ml broken-promise rate / recall at their
thresholds, then ml's recall at 1% broken, broken at 95% recall (both by sweep) and ECE.
"""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "target/evaluation/report/metrics.json"
with open(path) as f:
    runs = json.load(f)["runs"]
print("| scenario | surface | rules broken / recall | ml broken / recall "
      "| ml recall at 1% broken | ml broken at 95% recall | ml ECE |")
print("|---|---|---|---|---|---|---|")
for run in runs:
    methods = {m["method"]: m for m in run["methods"]}
    for surface in ("item_page", "pickup", "delivery"):
        rules = methods["rules"]["surfaces"][surface]
        ml = methods["ml"]["surfaces"][surface]

        def pair(s):
            o = s["overall"]
            return f"{100 * o['broken_promise_rate']:.2f}% / {100 * o['recall']:.1f}%"

        print(f"| `{run['scenario']}` | {surface} | {pair(rules)} | **{pair(ml)}** "
              f"| {100 * ml['recall_at_1pct_broken']:.1f}% "
              f"| {100 * ml['broken_at_95pct_recall']:.2f}% "
              f"| {ml['calibration']['ece']:.4f} |")
