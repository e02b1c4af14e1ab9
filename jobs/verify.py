"""Prove a dataset whole: every shard reads, matches the sha256 and size recorded when it was
written, and holds exactly its index's samples; keys are unique; the index and counts add up.

    python jobs/verify.py out/            # a run (jobs/generate.py --out), local or any fsspec URL
    python jobs/verify.py out-sweep/      # a sweep: every point

Prints `ok: ...` and exits 0, or lists every problem and exits 1 (2 for an unreadable OUT).
"""

from __future__ import annotations

import argparse
import sys

from dnp_batch.cli import ArgumentParser
from dnp_batch.runs import Run, is_sweep, sweep_points, verify_run


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="a run or sweep directory or URL")
    args = p.parse_args(argv)
    try:
        runs = [(name, url) for name, url, _ in sweep_points(args.out)] if is_sweep(args.out) else [("run", args.out)]
        problems = {name: verify_run(url) for name, url in runs}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = {name: found for name, found in problems.items() if found}
    for name, found in bad.items():
        for problem in found:
            print(f"{name}: {problem}" if len(runs) > 1 else problem)
    if bad:
        print(f"{sum(len(f) for f in bad.values())} problem(s) in {len(bad)} of {len(runs)} run(s)", file=sys.stderr)
        return 1
    samples = sum(len(Run(url).index()) for _, url in runs)
    print(f"ok: {len(runs)} run(s), {samples} samples, every shard intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
