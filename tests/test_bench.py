"""The bench scripts run and print what they promise (no assertion on wall time)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _check_nfe_rows(stdout: str, step_counts: str) -> dict:
    rows = [line.split() for line in stdout.splitlines()[1:]]
    assert len(rows) == len(step_counts.split(",")) * 6  # T x the methods that need no captioner (cfg ... apg)
    for steps, method, nfe, formula, nfe_ratio, time_ratio in rows:
        assert nfe == formula, (steps, method)
        assert float(time_ratio) > 0
    return {int(r[0]): int(r[2]) for r in rows if r[1] == "answer"}


def test_nfe_bench_prints_measured_nfe_matching_the_formula():
    proc = subprocess.run([sys.executable, "bench/nfe.py", "--repeats", "1", "--steps", "10,30"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _check_nfe_rows(proc.stdout, "10,30") == {10: 40, 30: 120}


def test_nfe_bench_on_the_transformer_that_calls_once_per_branch(capsys):
    """bench/nfe.py --family qwenimage (in this process): the hook on Qwen-Image's transformer."""
    sys.path.insert(0, str(REPO / "bench"))
    import nfe

    nfe.main(["--repeats", "1", "--steps", "10", "--family", "qwenimage"])
    assert _check_nfe_rows(capsys.readouterr().out, "10") == {10: 40}



def test_method_cost_bench_prints_the_nfe_ratio_and_no_reload_per_shard():
    """bench/method_cost.py: ANSWER's NFE ratio to CFG by the formula, model loads not per shard."""
    from dnp_batch.methods.answer import answer_nfe, k_schedule

    proc = subprocess.run([sys.executable, "bench/method_cost.py", "--batch-sizes", "2", "--steps", "4",
                           "--repeats", "1", "--shards", "3"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cost = [line.split() for line in proc.stdout.splitlines() if line.startswith("cost  2")]
    assert len(cost) == 1
    nfe_ratio = answer_nfe(4, [k_schedule(i, 4) for i in range(4)]) / (2 * 4)
    assert float(cost[0][-2]) == round(nfe_ratio, 3) and float(cost[0][4]) > 0
    loads = {line.split()[1]: line.split() for line in proc.stdout.splitlines() if line.startswith("loads")}
    assert loads["auto-dnp"][3:] == ["3", "pipeline", "1", "captioner", "1"]  # its two stages share one
    assert loads["cnp"][3:] == ["3", "pipeline", "1", "captioner", "1"]


def test_fidelity_study_quick_slice_runs_both_phases_end_to_end(tmp_path):
    """bench/fidelity.py explore/confirm/confirm-amended --quick: curves, best w, candidates.json,
    the confirmatory tests (relation first, Holm over the phase), CSVs, plots, verdict, and the
    amendment on phase 2's samples (README's tables come from the full study)."""
    import csv
    import json

    def run(*args):
        proc = subprocess.run([sys.executable, "bench/fidelity.py", *args, "--quick", "--workers", "1", "--out", str(tmp_path)],
                              cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    read = lambda name: list(csv.DictReader(open(tmp_path / name)))  # noqa: E731
    run("explore")
    samples, points = read("samples.csv"), read("points.csv")
    assert len(samples) == 4 * 2 * 8 and {r["split"] for r in samples} == {"val"} and len(points) == 4 * 2
    sel = json.loads((tmp_path / "candidates.json").read_text())
    assert set(sel["best_w"]) == {"cfg", "apg-eta0-m-0.5", "auto-dnp", "answer-lambda1"}
    assert len(sel["candidates"]) <= 3 and set(sel["candidates"]) <= set(sel["eligible"])
    for plot in ("adherence_vs_w.png", "relation_vs_w.png", "adherence_vs_nfe.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
    run("confirm")
    confirm = read("confirm/samples.csv")
    assert len(confirm) == 4 * 8 and {int(r["seed"]) for r in confirm} == set(range(1_000_000, 1_000_008))
    assert not {r["seed"] for r in confirm} & {r["seed"] for r in samples}  # fresh samples: no seed of phase 1
    tests = read("confirm/tests.csv")
    assert [r["attribute"] for r in tests[:5]] == ["relation", "all", "shape", "colour", "count"]
    assert len(tests) == 3 * 5 and all(float(r["p"]) <= float(r["holm_p"]) <= 1 for r in tests)
    assert (tmp_path / "confirm" / "differences.png").read_bytes()[:4] == b"\x89PNG"
    assert "Default by the rule:" in (tmp_path / "confirm" / "verdict.md").read_text()
    out = run("confirm-amended")  # the answer and dnp slots, quality not consulted; phase 2 (quick) ran them
    assert "reused from phase 2: cfg, answer-lambda1, auto-dnp; generating: none" in out
    amended = read("confirm-amended/tests.csv")
    assert len(amended) == 2 * 5 and [r["variant"] for r in amended[::5]] == ["answer-lambda1", "auto-dnp"]
    assert read("confirm-amended/samples.csv") == [r for name in ("cfg", "answer-lambda1", "auto-dnp")
                                                    for r in confirm if r["variant"] == name]
    assert "Default by the rule:" in (tmp_path / "confirm-amended" / "verdict.md").read_text()


@pytest.mark.parametrize("family", ["sd3", "qwenimage"])
def test_gpu_bench_flow_families_smoke_and_full_size_architectures(family, tmp_path):
    """bench/gpu.py --family: bare pipe() against CFG and ANSWER on the tiny twin; and the full-size
    architectures it builds on a GPU have the published sizes (built on the meta device, no memory)."""
    import json

    import torch

    sys.path.insert(0, str(REPO / "bench"))
    import gpu

    out = tmp_path / "gpu.json"
    with torch.enable_grad():  # restores the grad mode that the bench turns off for itself
        assert gpu.main(["--smoke", "--family", family, "--json", str(out)]) == 0  # in this process: no second import
    assert torch.is_grad_enabled()
    rows = json.loads(out.read_text())["rows"]
    assert {r["name"] for r in rows} == {"diffusers pipe() cfg", "dnp_batch cfg", "dnp_batch answer"}
    assert all(r["images_per_s"] > 0 for r in rows) and {r["batch"] for r in rows} == {1, 2}
    from diffusers import QwenImageTransformer2DModel, SD3Transformer2DModel

    with torch.device("meta"):
        net = (SD3Transformer2DModel(**gpu.SD35_LARGE_TRANSFORMER) if family == "sd3"
               else QwenImageTransformer2DModel(**gpu.QWENIMAGE_TRANSFORMER))
    billions = sum(p.numel() for p in net.parameters()) / 1e9
    assert abs(billions - {"sd3": 8.1, "qwenimage": 20.4}[family]) < 0.1  # SD3.5-large 8.1B, Qwen-Image 20B


def test_gpu_bench_smoke_runs_on_the_cpu(tmp_path):
    """bench/gpu.py --smoke: every measurement of the full-size GPU bench, on the tiny twins."""
    import json

    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    names = {r["name"] for r in rows}
    assert {"diffusers pipe() cfg", "dnp_batch cfg", "dnp_batch answer", "auto-dnp stage 1 (DNS + BLIP-2)",
            "auto-dnp stage 2 (NP)", "cfg, channels-last UNet", "VAE decode, fp32 upcast (SDXL default)"} <= names
    assert all(r["images_per_s"] > 0 for r in rows) and {r["batch"] for r in rows} == {1, 2}
    assert all(r["ratio_to_bare"] > 0 for r in rows if r["name"].startswith("dnp_batch"))
