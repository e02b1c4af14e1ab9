"""The bench scripts run and print what they promise (no assertion on wall time)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_nfe_bench_prints_measured_nfe_matching_the_formula():
    proc = subprocess.run([sys.executable, "bench/nfe.py", "--repeats", "1"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert len(rows) == 15
    for steps, method, nfe, formula, nfe_ratio, time_ratio in rows:
        assert nfe == formula, (steps, method)
        assert float(time_ratio) > 0
    answer = {int(r[0]): int(r[2]) for r in rows if r[1] == "answer"}
    assert answer == {10: 40, 30: 120, 50: 200}
