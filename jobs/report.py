"""Report on a finished run or sweep: tables, plots and contact sheets as one HTML page.

    python jobs/report.py out/            # a run (jobs/generate.py --out) or a sweep (holds sweep.json)
    python jobs/report.py sweep/ --score pickscore   # the paired comparison on another stored score

Writes summary.parquet/.csv and comparison.parquet/.csv into OUT, and OUT/report/index.html with
its plots and contact sheets beside it; prints the index.html path.
"""

from __future__ import annotations

import argparse
import sys

from dnp_batch.cli import ArgumentParser


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="a run or sweep directory (local path)")
    p.add_argument("--report-dir", help="where the HTML report goes (default OUT/report)")
    p.add_argument("--score", default="clip",
                   help="the score of the paired comparison: clip (default) or one the runs stored (pickscore, hps, ...)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from dnp_batch.report import write_report  # here: pandas, scipy and matplotlib load after --help

        index = write_report(args.out, args.report_dir, args.score)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
