"""Sweeps: grid points over shared prompts and seeds, one set of stages, one run dir per point."""

import importlib.util
import json

import pytest

from dnp_batch.stages import pipelines as stages
from dnp_batch.sweep import load_sweep
from jobutil import PROMPTS, REPO, index, read_run

TINY = REPO / "configs" / "sweeps" / "tiny.yaml"


def run_sweep(*args) -> int:
    spec = importlib.util.spec_from_file_location("sweep_job", REPO / "jobs" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args] + ["--distributor", "local"])


def test_tiny_sweep_runs_every_point_with_shared_models(tmp_path, monkeypatch):
    loads = []
    real = stages.load_pipeline
    monkeypatch.setattr(stages, "load_pipeline", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    out = tmp_path / "sweep"
    assert run_sweep("--sweep", TINY, "--prompts", PROMPTS, "--out", out) == 0
    # one load in this process, shared by the stages that need the diffusion model (DNS+caption,
    # generation), not one per point
    assert len(loads) == 1
    sweep = json.loads((out / "sweep.json").read_text())
    names = [p["name"] for p in sweep["points"]]
    assert names == ["cfg-w3", "cfg-w7", "answer-k1", "answer-k2", "auto-dnp"] and sweep["baseline"] == "cfg-w7"
    keys = None
    for point in sweep["points"]:
        samples = read_run(out / point["dir"])
        keys = keys or sorted(samples)
        assert sorted(samples) == keys and len(keys) == 8  # same prompts and seeds everywhere
        record = json.loads(next(iter(samples.values()))["json"])
        for axis, value in point["overrides"].items():
            section, _, key = axis.rpartition(".")
            assert (record[section][key] if section else record[axis]) == value
    assert (out / "report" / "index.html").exists() and (out / "summary.csv").exists()
    assert (out / "comparison.parquet").exists()

    # a rerun resumes: nothing left to generate, the same bytes
    before = {n: read_run(out / "points" / n) for n in names}
    assert run_sweep("--sweep", TINY, "--prompts", PROMPTS, "--out", out) == 0
    assert {n: read_run(out / "points" / n) for n in names} == before
    assert all(len(index(out / "points" / n)) == 8 for n in names)


def test_grid_is_the_cartesian_product(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"config: {REPO / 'configs/tiny-sd.yaml'}\ngrid:\n  method: [cfg, answer]\n"
                     "  guidance_scale: [3, 7.5]\npoints:\n  - {method: dns}\n")
    name, baseline, points = load_sweep(sweep)
    assert name == "s" and baseline == "method-cfg_guidance_scale-3"
    assert [p[0] for p in points] == ["method-cfg_guidance_scale-3", "method-cfg_guidance_scale-7.5",
                                      "method-answer_guidance_scale-3", "method-answer_guidance_scale-7.5",
                                      "method-dns"]
    assert points[3][1].guidance_scale == 7.5 and points[3][1].method == "answer"


@pytest.mark.parametrize(
    "text,message",
    [
        ("grid: {}\n", "the grid is empty and there are no points"),
        ("", "the grid is empty"),
        ("grids:\n  method: [cfg]\n", "unknown key 'grids'"),
        ("grid:\n  answer.kk: [1]\n", "unknown sweep axis 'answer.kk'"),
        ("grid:\n  method: []\n", "needs a non-empty list"),
        ("grid:\n  method: [cfg, nope]\n", "point 'method-nope'"),
        ("points:\n  - {name: a, method: cfg}\n  - {name: a, method: dns}\n", "both named 'a'"),
        ("baseline: zzz\npoints:\n  - {method: cfg}\n", "baseline 'zzz' is not a point"),
    ],
)
def test_bad_sweep_files_are_refused_before_anything_is_written(tmp_path, capsys, text, message):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(text)
    assert run_sweep("--sweep", sweep, "--prompts", PROMPTS, "--out", tmp_path / "o") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_toy_study_sweep_reports_the_judge_and_quality(tmp_path):
    """configs/sweeps/toy-study.yaml's shape on a slice: the toy model through the sweep job, the
    report's summary with the judge per attribute and the quality proxy, the judged paired comparison."""
    from dnp_batch.report import compare, load_runs, summarize, write_report

    name, baseline, points = load_sweep(REPO / "configs" / "sweeps" / "toy-study.yaml")
    assert baseline == "cfg-w3" and {"apg-w3", "answer-lambda1-w3", "auto-dnp-w3"} <= {p[0] for p in points}
    sweep = tmp_path / "slice.yaml"
    sweep.write_text(f"config: {REPO / 'configs' / 'toy-shapes.yaml'}\nset: {{steps: 3, clip.model: null}}\n"
                     "seeds: 1\nbaseline: cfg-w3\npoints:\n  - {name: cfg-w3, method: cfg, guidance_scale: 3.0}\n"
                     "  - {name: answer-lambda1-w3, method: answer, guidance_scale: 3.0, answer.negative_scale: 1.0}\n")
    out = tmp_path / "out"
    assert run_sweep("--sweep", sweep, "--prompts", REPO / "examples" / "toy-study.jsonl", "--out", out) == 0
    runs, base = load_runs(out)
    summary = summarize(runs)
    for column in ("judge_all", "judge_relation", "judge_all_ci_low", "quality_stray_pixels", "quality_palette_error"):
        assert summary[column].notna().all(), column
    assert (summary["judge_all_ci_low"] <= summary["judge_all"]).all()
    comparison = compare(runs, base)
    row = comparison.iloc[0]
    assert row["point"] == "answer-lambda1-w3" and row["judge_n"] == 16 and 0 <= row["judge_p"] <= 1
    assert row["judge_wins"] + row["judge_losses"] <= 16
    index = write_report(out)
    assert (index.parent / "judge_vs_guidance.png").is_file() and "judge_p" in index.read_text()
