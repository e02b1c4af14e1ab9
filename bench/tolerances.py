"""Measure what the numeric tests' tolerances bound: run the test files that compare numbers under
each thread count and ATen SIMD level, log every comparison's largest |difference| (through
tests/numerics.assert_close), and print the worst case of each against its tolerance.

    python bench/tolerances.py [--files tests/test_sampler.py,...] [--out bench/results/tolerances-cpu.txt]

Settings: OMP_NUM_THREADS in {1, 2} (torch.set_num_threads follows it) x ATEN_CPU_CAPABILITY in
{default, the machine's best} (`torch.backends.cpu.get_cpu_capability()`; avx2 or avx512). Each
setting is a fresh pytest process; a failing test is reported, not hidden. No timing is measured.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ("tests/test_sampler.py", "tests/test_answer.py", "tests/test_dnp.py", "tests/test_methods.py",
         "tests/test_guidance.py", "tests/test_scorers.py", "tests/test_toyworld.py")


def best_capability() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default=",".join(FILES))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    caps = ["default", best_capability()]
    worst: dict[tuple[str, str], dict] = {}
    lines, failures = [], []
    for threads in args.threads.split(","):
        for cap in caps:
            with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
                log = f.name
            env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                   "ATEN_CPU_CAPABILITY": cap, "DNP_TOLERANCE_LOG": log}
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   *args.files.split(",")], cwd=REPO, env=env, capture_output=True, text=True)
            summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
            lines.append(f"OMP_NUM_THREADS={threads} ATEN_CPU_CAPABILITY={cap}: {summary}")
            print(lines[-1], flush=True)
            if proc.returncode != 0:
                failures.append((threads, cap))
                lines += [f"    {l}" for l in proc.stdout.splitlines() if l.startswith("FAILED")]
            for row in map(json.loads, Path(log).read_text().splitlines()):
                test = row["test"].split("[")[0]
                key = (test, row["what"])
                cur = worst.setdefault(key, {**row, "setting": ""})
                if row["max_abs_diff"] >= cur["max_abs_diff"]:
                    worst[key] = {**row, "setting": f"threads={threads} {cap}"}
            os.unlink(log)
    lines += ["", f"{'comparison':<95} {'worst |diff|':>12} {'|value|':>8} {'atol':>8} {'margin':>7}  where"]
    for (test, what), row in sorted(worst.items()):
        margin = row["atol"] / row["max_abs_diff"] if row["max_abs_diff"] else float("inf")
        lines.append(f"{test + ' :: ' + what:<95} {row['max_abs_diff']:12.3g} {row['max_abs_value']:8.3g} "
                     f"{row['atol']:8.1g} {margin:7.1f}  {row['setting']} ({row['test'].split('::')[-1]})")
    text = "\n".join(lines)
    print("\n".join(lines[-len(worst) - 1:]))
    if args.out:
        Path(args.out).write_text(f"$ python bench/tolerances.py\n{text}\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
