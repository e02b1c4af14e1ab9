"""Run an ablation sweep: every grid point over the same prompts and seeds, as one job.

    python jobs/sweep.py --sweep configs/sweeps/tiny.yaml --prompts examples/prompts.jsonl --out sweep-out/

All points go through one set of stages (one Ray job), so points that share a model share its
loaded copy. Each point lands in OUT/points/NAME (a run directory, resumable like a single run);
OUT/sweep.json lists the points. At the end the summary tables and the HTML report are written
into OUT (OUT/report/index.html), as `python jobs/report.py OUT` would.
"""

from __future__ import annotations

import argparse
import sys

from dnp_batch.cli import ArgumentParser
from dnp_batch.prompts import PromptSet, folded_note
from dnp_batch.runs import SWEEP, write_sweep
from dnp_batch.sink import ShardSink
from dnp_batch.sweep import load_sweep

# torch, diffusers and Ray load in main(), once the sweep and the prompts are read: --help and
# every error that needs no model answer at once (bench/cli_latency.py measures it).


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", required=True, help="sweep YAML (see configs/sweeps/)")
    p.add_argument("--prompts", required=True, help="JSONL, TXT, CSV/TSV or Parquet prompt set")
    p.add_argument("--out", required=True, help="output directory or fsspec URL")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="require a sweep in --out to resume")
    mode.add_argument("--overwrite", action="store_true", help="replace the points' runs in --out")
    p.add_argument("--distributor", choices=["ray", "local"], default="ray")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        name, baseline, specs = load_sweep(args.sweep)
        samples = PromptSet(args.prompts, specs[0][1].seeds)  # streamed: the workers read their shards
        if note := folded_note(samples):
            print(note, file=sys.stderr)
        out = args.out.rstrip("/")
        from dnp_batch.job import Point, run_local, run_points

        points = [Point(n, cfg, f"{out}/points/{n}") for n, cfg, _ in specs]
        sink = ShardSink(out)
        if sink.has_foreign_files(allowed={SWEEP, "points", "report", "summary.parquet", "summary.csv",
                                           "comparison.parquet", "comparison.csv"}):
            raise ValueError(f"--out {args.out} is not empty and holds no dnp_batch sweep; choose an empty --out")
        if args.distributor == "ray":
            from dnp_batch.dag import run_ray as distributor
        else:
            distributor = run_local
        run_points(points, samples, distributor, resume=args.resume, overwrite=args.overwrite)
        write_sweep(out, name, [{"name": n, "overrides": o, "dir": f"points/{n}"} for n, _, o in specs], baseline)
        for point in points:
            print(f"{point.name}: {point.summary.line(point.cfg.method)}; {point.summary.time_line()}")
        if {"file", "local"} & sink.protocols:
            from dnp_batch.report import write_report

            print(f"report: {write_report(sink.root)}")
        else:
            print(f"report: copy {args.out} locally and run python jobs/report.py on it", file=sys.stderr)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
