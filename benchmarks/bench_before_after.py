"""The same queries on two versions of the code, side by side: verdicts, distances and times.

    python benchmarks/bench_before_after.py --before 0523652 [--rounds 2]

Checks out ``--before`` into a temporary git worktree and runs every query in a fresh process per version,
alternating versions (before, after, before, after, ...) so that the machine's load affects both alike.
Queries: WK17a (MIPVerify's network) exact distances of test images 9 and 493 (1-based) by direct
minimisation and of image 9 by bisection; the first VNN-COMP ``mnist_fc`` instances; one Table 1 anchor
(attack, f and six substitutes).  Writes ``benchmarks/results/before_after.md``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, machine, shared_data_or_note

PRELUDE = """
import json, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from _common import mnist_test, wk17a
shared = __import__('pathlib').Path({shared!r})
xs, ys = mnist_test(shared)
net = wk17a(shared)
"""

QUERIES = {
    "wk17a-9-direct": """
from lsub_helpers.distance import boundary_distance
t = time.perf_counter(); d = boundary_distance(net, xs[8], int(ys[8]), method="direct", tighten_lp=60.0)
print(json.dumps(dict(status=d.status.value, value=d.value, time=time.perf_counter() - t)))
""",
    "wk17a-493-direct": """
from lsub_helpers.distance import boundary_distance
t = time.perf_counter(); d = boundary_distance(net, xs[492], int(ys[492]), method="direct", tighten_lp=60.0)
print(json.dumps(dict(status=d.status.value, value=d.value, time=time.perf_counter() - t)))
""",
    "wk17a-9-bisection": """
from lsub_helpers.distance import boundary_distance
t = time.perf_counter(); d = boundary_distance(net, xs[8], int(ys[8]), method="bisection", tol=1e-5)
print(json.dumps(dict(status=d.status.value, value=d.value, time=time.perf_counter() - t)))
""",
    "vnncomp-256x2-first10": """
import csv
from lsub_helpers.network import ReluNetwork
from lsub_helpers.vnnlib import verify_vnnlib
root = shared / "vnncomp" / "mnist_fc_2022"
rows = [r for r in csv.reader(open(root / "instances.csv")) if "256x2" in r[0]][:10]
out = []
t = time.perf_counter()
for row in rows:
    onnx, prop = row[0], row[1]
    f = ReluNetwork.from_onnx(root / onnx)
    out.append(str(verify_vnnlib(f, root / prop, time_limit=60.0).result))
print(json.dumps(dict(status=",".join(out), value=None, time=time.perf_counter() - t)))
""",
    "table1-anchor-wk17a-9": """
from lsub_helpers.experiments import ExperimentConfig, run_anchor
t = time.perf_counter()
r = run_anchor(net, xs[8], int(ys[8]), 8, ExperimentConfig(tol=1e-5))
vals = [r["f"]["value"]] + [s["g"]["value"] for s in r["substitutes"] if "g" in s]
print(json.dumps(dict(status=r["f"]["status"], value=vals, time=time.perf_counter() - t)))
""",
}


def run_one(root: Path, name: str, shared: Path) -> dict:
    code = PRELUDE.format(bench=str(ROOT / "benchmarks"), shared=str(shared)) + QUERIES[name]
    env = {"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(root),
                         timeout=3600)
    if out.returncode != 0:
        return dict(status="error: " + out.stderr.strip().splitlines()[-1], value=None, time=None)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision of the code before the change")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", nargs="*", choices=sorted(QUERIES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "before_after.md"))
    args = ap.parse_args(argv)
    shared = shared_data_or_note("nothing to compare")
    if shared is None:
        return 0
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True,
                         text=True, check=True).stdout.strip()
    now = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), rev], check=True,
                       capture_output=True)
        try:
            for name in args.only or list(QUERIES):
                for _ in range(args.rounds):
                    for label, root in (("before", old), ("after", ROOT)):
                        r = run_one(root, name, shared)
                        results.setdefault((name, label), []).append(r)
                        print(name, label, r, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    lines = [f"# Before / after: {rev} against {now}", "", machine(), "",
             "Each query in a fresh process per version, versions alternated; times are wall seconds of the whole "
             "query (median over rounds).", "",
             "| query | before: result | after: result | same | before (s) | after (s) | after / before |",
             "|---|---|---|---|---|---|---|"]
    for name in args.only or list(QUERIES):
        b, a = results[(name, "before")], results[(name, "after")]
        same = all(x["status"] == y["status"] and _close(x["value"], y["value"]) for x, y in zip(b, a))
        tb = statistics.median(x["time"] for x in b if x["time"] is not None) if any(x["time"] for x in b) else float("nan")
        ta = statistics.median(x["time"] for x in a if x["time"] is not None) if any(x["time"] for x in a) else float("nan")
        lines.append(f"| {name} | {b[0]['status']} {_fmt(b[0]['value'])} | {a[0]['status']} {_fmt(a[0]['value'])} | "
                     f"{'yes' if same else 'NO'} | {tb:.1f} | {ta:.1f} | {ta / tb:.2f} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


def _close(x, y, tol=1e-4) -> bool:
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(a, b, tol) for a, b in zip(x, y))
    if x is None or y is None:
        return x is None and y is None
    return abs(x - y) <= tol * max(abs(x), abs(y), 1e-12)


def _fmt(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return "—" if v is None else f"{v:.6g}"


if __name__ == "__main__":
    sys.exit(main())
