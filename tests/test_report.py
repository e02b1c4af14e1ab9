"""Reports over a run or a sweep: tables, paired comparison, HTML with plots and contact sheets."""

import importlib.util
import json
import re
import shutil

import pandas as pd
import pytest
from PIL import Image

from dnp_batch import report
from jobutil import EXAMPLE_KEYS, FAST, PROMPTS, REPO, run_job

POINTS = {  # name -> (method, guidance scale)
    "cfg_w3": ("cfg", 3.0),
    "cfg_w7": ("cfg", 7.0),
    "autodnp_w7": ("auto-dnp", 7.0),
}
SEEDS = 2
PROMPT_IDS = [k.removesuffix("_0") for k in EXAMPLE_KEYS]


def load_cli():
    spec = importlib.util.spec_from_file_location("report_job", REPO / "jobs" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """Three points of the tiny SD model (4 steps, 2 seeds) and a sweep.json with baseline cfg_w7."""
    root = tmp_path_factory.mktemp("sweep")
    points = []
    for name, (method, w) in POINTS.items():
        assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", method, "--set", f"guidance_scale={w}",
                       "--set", "steps=4", "--seeds", SEEDS, "--out", root / "points" / name) == 0
        points.append({"name": name, "overrides": {"method": method, "guidance_scale": w}, "dir": f"points/{name}"})
    (root / "sweep.json").write_text(json.dumps({"name": "tiny sweep", "baseline": "cfg_w7", "points": points}))
    return root


@pytest.fixture(scope="module")
def rendered(sweep_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return report.write_report(sweep_dir, out)


def test_load_runs_reads_every_point_in_order(sweep_dir):
    runs, baseline = report.load_runs(sweep_dir)
    assert list(runs) == list(POINTS) and baseline == "cfg_w7"
    dnp = runs["autodnp_w7"]
    assert dnp.overrides == {"method": "auto-dnp", "guidance_scale": 7.0} and dnp.config["method"] == "auto-dnp"
    assert len(dnp.index) == len(EXAMPLE_KEYS) * SEEDS
    assert {"nfe", "seconds", "guidance_scale", "steps", "scheduler", "prompt_id"} <= set(dnp.index.columns)
    assert set(dnp.index["steps"]) == {4} and set(dnp.index["guidance_scale"]) == {7.0}
    assert dnp.image("fox_0").startswith(b"\x89PNG") and dnp.dns_image("fox_0").startswith(b"\x89PNG")
    assert runs["cfg_w7"].dns_image("fox_0") is None and dnp.image("nope_0") is None
    assert dnp.has_dns and not runs["cfg_w3"].has_dns


def test_summarize_has_one_row_per_point_with_interval(sweep_dir):
    runs, _ = report.load_runs(sweep_dir)
    summary = report.summarize(runs)
    assert list(summary["point"]) == list(POINTS)
    assert list(summary["method"]) == [m for m, _ in POINTS.values()]
    assert list(summary["guidance_scale"]) == [w for _, w in POINTS.values()]
    assert {"clip_mean", "clip_ci_low", "clip_ci_high", "nfe_mean", "seconds_per_image"} <= set(summary.columns)
    assert list(summary["n"]) == [len(EXAMPLE_KEYS) * SEEDS] * 3 and list(summary["failures"]) == [0] * 3
    assert (summary["clip_ci_low"] <= summary["clip_mean"]).all()
    assert (summary["clip_mean"] <= summary["clip_ci_high"]).all()
    nfe = summary.set_index("point")["nfe_mean"]
    assert nfe["autodnp_w7"] == 2 * nfe["cfg_w7"]  # DNS chain + NP chain


def test_interval_needs_two_values():
    assert all(pd.isna(v) for v in report.t_interval([]))
    mean, low, high = report.t_interval([3.0])
    assert mean == 3.0 and pd.isna(low) and pd.isna(high)
    mean, low, high = report.t_interval([1.0, 2.0, 3.0])
    assert low < mean == 2.0 < high


def test_compare_pairs_samples_against_the_baseline(sweep_dir):
    runs, baseline = report.load_runs(sweep_dir)
    comparison = report.compare(runs, baseline)
    assert list(comparison["point"]) == ["cfg_w3", "autodnp_w7"] and set(comparison["baseline"]) == {"cfg_w7"}
    for row in comparison.itertuples():
        assert row.n_pairs == len(EXAMPLE_KEYS) * SEEDS
        assert row.wins + row.losses + row.ties == row.n_pairs
        decided = row.wins + row.losses
        assert (pd.isna(row.p_value) and pd.isna(row.win_rate)) if decided == 0 else 0 <= row.p_value <= 1
    assert report.compare(runs, None).empty
    with pytest.raises(ValueError, match="baseline 'nope'"):
        report.compare(runs, "nope")


def test_write_tables(sweep_dir, tmp_path):
    runs, baseline = report.load_runs(sweep_dir)
    report.write_tables(runs, tmp_path, baseline)
    assert len(pd.read_parquet(tmp_path / "summary.parquet")) == 3
    assert len(pd.read_csv(tmp_path / "summary.csv")) == 3
    assert len(pd.read_parquet(tmp_path / "comparison.parquet")) == 2
    assert list(pd.read_csv(tmp_path / "comparison.csv")["point"]) == ["cfg_w3", "autodnp_w7"]


def test_report_references_only_files_beside_it(sweep_dir, rendered):
    html = rendered.read_text()
    assert rendered.name == "index.html"
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)
    assert len(sources) >= 3
    for src in sources:
        assert "/" not in src and (rendered.parent / src).is_file(), src
    assert "<script" not in html and "http" not in html and "<link" not in html
    for name in POINTS:
        assert name in html
    assert (sweep_dir / "summary.parquet").is_file() and (sweep_dir / "comparison.csv").is_file()


def test_contact_sheet_has_a_cell_per_prompt_and_column(rendered):
    sheets = sorted(rendered.parent.glob("contact-*.png"))
    assert [s.name for s in sheets] == ["contact-seed0-01.png"]
    columns = len(POINTS) + 1  # the auto-dnp point's DNS column
    width, height = Image.open(sheets[0]).size
    cell = report.TILE + report.GAP
    assert 0 < width - columns * cell < report.TILE  # the prompt-id labels on the left
    assert 0 < height - len(PROMPT_IDS) * cell < report.TILE  # the point labels on top


def test_contact_sheets_split_by_prompts_per_sheet(sweep_dir, tmp_path):
    runs, _ = report.load_runs(sweep_dir)
    sheets = report.contact_sheets(runs, tmp_path, prompts_per_sheet=3, tile=32)
    assert [s.name for s in sheets] == ["contact-seed0-01.png", "contact-seed0-02.png"]
    sizes = [Image.open(s).size for s in sheets]
    cell = 32 + report.GAP
    assert sizes[0][0] == sizes[1][0] and sizes[0][1] - 3 * cell == sizes[1][1] - cell > 0
    assert [c[0] for c in report.sheet_columns(runs)] == [*POINTS, "autodnp_w7 DNS"]


def test_cli_on_a_single_run(sweep_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(sweep_dir / "points" / "autodnp_w7", run)
    assert load_cli().main([str(run)]) == 0
    index = run / "report" / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    assert index.is_file() and (run / "summary.csv").is_file()
    summary = pd.read_parquet(run / "summary.parquet")
    assert list(summary["point"]) == ["run"] and summary["n"][0] == len(EXAMPLE_KEYS) * SEEDS
    assert pd.read_parquet(run / "comparison.parquet").empty


def test_cli_refuses_a_dir_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert load_cli().main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{tmp_path} is not a dnp_batch run or sweep" in err


def test_bad_sweep_files_are_named(sweep_dir, tmp_path):
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    (tmp_path / "sweep.json").write_text(json.dumps({**sweep, "baseline": "nope"}))
    with pytest.raises(ValueError, match="baseline 'nope' is not a point"):
        report.load_runs(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))  # the points' dirs are not here
    with pytest.raises(ValueError, match="sweep point 'cfg_w3'.*not a finished dnp_batch run"):
        report.load_runs(tmp_path)
