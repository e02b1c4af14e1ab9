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
    assert len(rows) == 3 * 6  # T in (10, 30, 50) x the methods that need no captioner (cfg ... apg)
    for steps, method, nfe, formula, nfe_ratio, time_ratio in rows:
        assert nfe == formula, (steps, method)
        assert float(time_ratio) > 0
    answer = {int(r[0]): int(r[2]) for r in rows if r[1] == "answer"}
    assert answer == {10: 40, 30: 120, 50: 200}


def test_pipeline_bench_prints_throughput_and_memory_ratios(ray_env):
    proc = subprocess.run([sys.executable, "bench/pipeline.py", "--samples", "4", "--prompt-counts", "200,2000"],
                          cwd=REPO, env=ray_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ratios = {" ".join(f[1:-1]): float(f[-1]) for f in (line.split() for line in proc.stdout.splitlines())
              if f and f[0] == "ratio"}
    assert {"ray_job/bare", "memory 2000/200"} <= set(ratios), proc.stdout
    assert all(value > 0 for value in ratios.values()), ratios
    rates = [line.split() for line in proc.stdout.splitlines() if line.startswith("throughput")]
    assert {r[1] for r in rates} >= {"ray_job", "bare_diffusers"} and all(float(r[2]) > 0 for r in rates)
    peaks = [line.split() for line in proc.stdout.splitlines() if line.startswith("memory")]
    assert [p[1] for p in peaks] == ["200", "2000"]
    assert all(float(p[p.index("peak_rss_mb") + 1]) > 0 for p in peaks)


def test_fidelity_bench_runs_on_the_toy_model(tmp_path):
    """bench/fidelity.py end to end on a few samples (the README's table comes from --n 200)."""
    out = tmp_path / "fidelity.csv"
    proc = subprocess.run([sys.executable, "bench/fidelity.py", "--n", "4", "--steps", "4", "--methods", "cfg,dns",
                           "--csv", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = out.read_text().splitlines()
    assert rows[0].startswith("method,nfe,seconds_per_image,shape") and len(rows) == 3
    assert [r.split(",")[0] for r in rows[1:]] == ["cfg", "dns"]
