"""``python -m fuzz --target all --n N``: the fuzz campaign over every reader tidlc has.

Prints one row per target: inputs, clean errors, successes, internal errors, hangs (> 5 s),
inputs over the memory limit, and the peak resident set of the workers. Exit 1 when any
internal error, hang or memory finding occurred. docs/fuzzing.md describes the targets.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from fuzz.runner import TARGETS, campaign


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="all", help=f"all, or a comma list of: {', '.join(TARGETS)}")
    p.add_argument("--n", type=int, default=1000, help="inputs per target (default 1000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (inputs are derived from it)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds before an input counts as a hang")
    p.add_argument("--mem-limit-mib", type=int, default=2048, help="peak RSS over this counts as a finding")
    p.add_argument("--only", type=int, action="append", metavar="INDEX", help="replay these input indices")
    p.add_argument("--findings", default=os.path.join("fuzz", "findings"),
                   help="where failing inputs are saved ('' to not save)")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON")
    p.add_argument("--verbose", "-v", action="store_true", help="print every distinct finding")
    args = p.parse_args(argv)
    names = TARGETS if args.target == "all" else tuple(t.strip() for t in args.target.split(","))
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    header = f"{'target':<14}{'inputs':>9}{'clean':>9}{'ok':>9}{'internal':>10}{'hangs':>7}{'>mem':>6}{'peak RSS':>10}{'in/s':>8}"
    print(header)
    results = []
    for name in names:
        r = campaign(name, args.n, workers=max(1, args.workers), campaign_seed=args.seed, timeout=args.timeout,
                     mem_limit=args.mem_limit_mib << 20, findings_dir=args.findings or None, only=args.only)
        results.append(r)
        rate = r.inputs / r.seconds if r.seconds else 0.0
        print(f"{name:<14}{r.inputs:>9}{r.clean:>9}{r.ok:>9}{r.internal:>10}{r.hang:>7}{r.memory:>6}"
              f"{r.peak_rss / 2**20:>8.0f}Mi{rate:>8.0f}", flush=True)
        if args.verbose or r.internal or r.hang or r.memory:
            for finding, count in r.findings.most_common(None if args.verbose else 15):
                if args.verbose or not finding.startswith(("ok", "clean")):
                    print(f"    {count:>6} x {finding}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"schema": "tidlc.fuzz/1", "seed": args.seed, "targets": [r.as_dict() for r in results]},
                      fh, indent=1)
    bad = sum(r.internal + r.hang + r.memory for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
