"""How fast the command lines answer when no model is needed: `--help`, a missing prompts file, and
the imports of reading a sweep file (torch, diffusers and Ray load only once a job really runs).

    python bench/cli_latency.py [--repeats 3]

Prints, for each command, the median wall time of `--repeats` runs in fresh processes (so it
includes the interpreter's start-up), and the total import time (`python -X importtime`) of
reading `configs/sweeps/answer-paper.yaml` with `dnp_batch.sweep.load_sweep`, with which of torch,
diffusers and ray that loaded (none is the aim).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MISSING = "does-not-exist.jsonl"
COMMANDS = {
    "generate --help": ["jobs/generate.py", "--help"],
    "generate, missing --prompts": ["jobs/generate.py", "--prompts", MISSING, "--out", "/tmp/dnp-cli-latency"],
    "sweep --help": ["jobs/sweep.py", "--help"],
    "sweep, missing --prompts": ["jobs/sweep.py", "--sweep", "configs/sweeps/answer-paper.yaml", "--prompts", MISSING,
                                 "--out", "/tmp/dnp-cli-latency"],
    "report --help": ["jobs/report.py", "--help"],
    "pairs --help": ["jobs/pairs.py", "--help"],
    "verify --help": ["jobs/verify.py", "--help"],
}
READ_SWEEP = ("import sys; from dnp_batch.sweep import load_sweep; load_sweep('configs/sweeps/answer-paper.yaml'); "
              "print(' '.join(m for m in ('torch', 'diffusers', 'ray') if m in sys.modules) or 'none')")


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"{'command':<30} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, argv in COMMANDS.items():
        times = [wall(argv) for _ in range(args.repeats)]
        print(f"{name:<30} {statistics.median(times):9.2f} {min(times):7.2f} {max(times):7.2f}")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", READ_SWEEP], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    # -X importtime lines: "import time: self | cumulative | name"; top-level imports have no indent
    total_us = sum(int(line.split("|")[1]) for line in proc.stderr.splitlines()
                   if line.startswith("import time:") and line.split("|")[1].strip().isdigit()
                   and not line.split("|")[2].startswith("  "))
    print(f"reading a sweep file: imports {total_us / 1e6:.2f} s (-X importtime, top-level cumulative); "
          f"heavy modules loaded: {proc.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
