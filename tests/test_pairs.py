"""Preference pairs from runs over the same prompts and seeds: labels, ties, margins, the WebDataset
and Pick-a-Pic Parquet outputs, mismatched runs, the CLI and sweeps."""

import hashlib
import importlib.util
import io
import json
import shutil

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from dnp_batch import scorers
from dnp_batch.pairs import build_pairs, get_scorer, resolve_runs, write_pairs
from jobutil import FAST, PROMPTS, REPO, records, run_job

PAIRS_JOB = REPO / "jobs" / "pairs.py"
KEYS = sorted(f"{pid}_{seed}" for pid in ("astronaut", "city", "fox", "teapot") for seed in (0, 1))
WDS_KEYS = {"original_prompt.txt", "jpg_0.jpg", "jpg_1.jpg", "label_0.txt", "label_1.txt", "json"}
PICKAPIC_COLUMNS = ["caption", "jpg_0", "jpg_1", "label_0", "label_1", "model_0", "model_1", "image_0_uid",
                    "image_1_uid", "best_image_uid", "are_different", "has_label", "ranking_id",
                    "num_example_per_prompt"]


class HashScorer:
    """Deterministic, distinct scores from the pixels: stands in for a real preference model."""

    name = "hash"

    def score(self, images, prompts):
        return [int(hashlib.sha256(im.tobytes()).hexdigest()[:12], 16) / 16**12 for im in images]


class ConstantScorer:
    name = "constant"

    def score(self, images, prompts):
        return [1.0] * len(images)


class MethodScorer:
    """cfg 1.0, answer 1.3, dns 3.0: margins known in advance."""

    name = "by-method"
    SCORES = {"cfg": 1.0, "answer": 1.3, "dns": 3.0}

    def score_records(self, records):  # a labeller may read the runs' records instead of the images
        return [self.SCORES[r["method"]] for r in records]


@pytest.fixture(autouse=True)
def fake_scorers(monkeypatch):
    """The fakes join the scorer registry, as a plug-in's scorers do (`--scorer hash --recompute`)."""
    fakes = [scorers.ScorerSpec(cls.name, f"{__name__}:{cls.__name__}", "a test's fake")
             for cls in (HashScorer, ConstantScorer, MethodScorer)]
    extended = {**scorers.registry(), **{spec.name: spec for spec in fakes}}
    monkeypatch.setattr(scorers, "registry", lambda: extended)


def generate(out, method, *extra, prompts=PROMPTS, seeds="0,1"):
    assert run_job("--prompts", prompts, "--config", FAST, "--method", method, "--seeds", seeds,
                   "--set", "steps=4", *extra, "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """cfg, answer and dns over the example prompts, seeds 0,1; dns with CLIP scoring off."""
    root = tmp_path_factory.mktemp("pair-runs")
    return {
        "cfg": generate(root / "cfg", "cfg"),
        "answer": generate(root / "answer", "answer"),
        "dns": generate(root / "dns", "dns", "--set", "clip.model=null"),
    }


def run_pairs_job(*args) -> int:
    spec = importlib.util.spec_from_file_location("pairs_job", PAIRS_JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def read_shards(out) -> dict[str, dict]:
    tars = sorted(str(p) for p in out.glob("pairs-*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(tars, shardshuffle=False)}


def three(runs):
    return [("cfg", str(runs["cfg"])), ("answer", str(runs["answer"])), ("dns", str(runs["dns"]))]


def test_labels_follow_the_scores_and_the_outputs_read_back(runs, tmp_path):
    pairs = build_pairs(three(runs), HashScorer())
    assert len(pairs) == len(KEYS) * 3 and pairs.skipped_by_margin == 0
    assert sorted({p.key for p in pairs}) == KEYS
    assert {(p.model_0, p.model_1) for p in pairs} == {("cfg", "answer"), ("cfg", "dns"), ("answer", "dns")}
    for p in pairs:
        assert p.score_0 != p.score_1
        assert (p.label_0, p.label_1) == ((1.0, 0.0) if p.score_0 > p.score_1 else (0.0, 1.0))

    out = tmp_path / "pairs"
    manifest = write_pairs(pairs, str(out), samples_per_shard=10)
    assert manifest["counts"]["pairs"] == 24 and manifest["counts"]["ties"] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "pairs-00000.tar", "pairs-00001.tar", "pairs-00002.tar", "pairs.parquet", "pairs_manifest.json"]

    samples = read_shards(out)
    assert sorted(samples) == sorted(p.pair_key for p in pairs)
    prompts = {k: r["prompt"] for k, r in records(runs["cfg"]).items()}
    for p in pairs:
        s = samples[p.pair_key]
        assert "." not in p.pair_key and WDS_KEYS <= set(s)
        labels = float(s["label_0.txt"]), float(s["label_1.txt"])
        assert labels == (1.0, 0.0)  # the tars put the preferred image first (diffusion_orpo's reader)
        first = p.jpg_0 if p.label_0 == 1 else p.jpg_1
        assert s["jpg_0.jpg"] == first and json.loads(s["json"])["score_0"] == max(p.score_0, p.score_1)
        assert s["original_prompt.txt"].decode() == prompts[p.key]
        for name in ("jpg_0.jpg", "jpg_1.jpg"):
            image = Image.open(io.BytesIO(s[name]))
            assert image.format == "JPEG" and image.size == (64, 64)
        meta = json.loads(s["json"])
        assert meta["scorer"] == "hash" and meta["seed"] == p.seed and meta["model_0"] == p.preferred_first().model_0

    table = pq.read_table(out / "pairs.parquet")
    assert table.column_names[:len(PICKAPIC_COLUMNS)] == PICKAPIC_COLUMNS
    assert set(table.column_names) == set(PICKAPIC_COLUMNS) | {"score_0", "score_1", "seed", "key"}
    rows = table.to_pylist()
    assert [r["ranking_id"] for r in rows] == list(range(24))
    for r in rows:
        assert r["label_0"] + r["label_1"] == 1 and r["are_different"] and r["has_label"]
        assert r["best_image_uid"] == (r["image_0_uid"] if r["label_0"] == 1 else r["image_1_uid"])
        assert r["num_example_per_prompt"] == 6  # 2 seeds x 3 run pairs
        best = r["jpg_0"] if r["label_0"] == 1 else r["jpg_1"]  # the Parquet keeps the runs' order
        assert best == samples[r["key"]]["jpg_0.jpg"] and {r["jpg_0"], r["jpg_1"]} == {
            samples[r["key"]]["jpg_0.jpg"], samples[r["key"]]["jpg_1.jpg"]}


def test_equal_scores_are_ties(runs, tmp_path):
    pairs = build_pairs(three(runs), ConstantScorer())
    assert len(pairs) == 24 and all((p.label_0, p.label_1) == (0.5, 0.5) for p in pairs)
    out = tmp_path / "ties"
    assert write_pairs(pairs, str(out))["counts"]["ties"] == 24
    for s in read_shards(out).values():
        assert s["label_0.txt"] == s["label_1.txt"] == b"0.5"
    assert {r["best_image_uid"] for r in pq.read_table(out / "pairs.parquet").to_pylist()} == {""}


def test_min_margin_skips_close_pairs(runs, tmp_path):
    pairs = build_pairs(three(runs), MethodScorer(), min_margin=0.5)
    assert pairs.skipped_by_margin == len(KEYS)  # cfg vs answer: 0.3 apart
    assert {(p.model_0, p.model_1) for p in pairs} == {("cfg", "dns"), ("answer", "dns")}
    assert all((p.label_0, p.label_1) == (0.0, 1.0) for p in pairs)
    counts = write_pairs(pairs, str(tmp_path / "m"))["counts"]
    assert counts["pairs"] == 16 and counts["skipped_by_margin"] == 8
    with pytest.raises(ValueError, match="min_margin"):
        build_pairs(three(runs), MethodScorer(), min_margin=-1)


def test_stored_clip_scores(runs):
    pairs = build_pairs([("cfg", runs["cfg"]), ("answer", runs["answer"])], "clip")
    cfg, answer = records(runs["cfg"]), records(runs["answer"])
    assert len(pairs) == len(KEYS)
    for p in pairs:
        assert (p.score_0, p.score_1) == (cfg[p.key]["clip_score"], answer[p.key]["clip_score"])
        assert p.label_0 + p.label_1 == 1
    with pytest.raises(ValueError, match=r"run dns has no clip_score for \w+_\d; generate with a clip model"):
        build_pairs([("cfg", runs["cfg"]), ("dns", runs["dns"])], "clip")


def test_clip_recompute_with_the_tiny_clip(runs):
    pairs = build_pairs([("cfg", runs["cfg"]), ("dns", runs["dns"])], get_scorer("clip", recompute=True, model="tiny-clip"))
    assert len(pairs) == len(KEYS) and all(p.score_0 >= 0 and p.score_1 >= 0 for p in pairs)
    # the same scorer as the job's: on the cfg run's PNGs (lossless) it gives the stored clip_score
    stored = {key: rec["clip_score"] for key, rec in records(runs["cfg"]).items()}
    for p in pairs:
        # measured 0.0 here; the bound (on scores of 0-100) allows another CPU's kernels to block the
        # recompute's batch of 128 and the job's batch of one shard differently
        assert p.score_0 == pytest.approx(stored[p.key], abs=1e-3), p.key


def test_runs_over_other_prompts_or_seeds_are_refused(runs, tmp_path):
    lines = PROMPTS.read_text().splitlines()
    lines[0] = json.dumps({"id": "fox", "prompt": "a blue fox"})
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(lines) + "\n")
    prompts_run = generate(tmp_path / "other-prompts", "cfg", prompts=other)
    seeds_run = generate(tmp_path / "other-seeds", "cfg", seeds="0,2")

    with pytest.raises(ValueError, match=r"same prompts and seeds: runs cfg and other-prompts differ.*'fox_0'"):
        build_pairs(resolve_runs([runs["cfg"], prompts_run]), HashScorer())
    with pytest.raises(ValueError, match=r"same prompts and seeds: runs cfg and other-seeds differ.*_1'"):
        build_pairs(resolve_runs([runs["cfg"], seeds_run]), HashScorer())
    with pytest.raises(ValueError, match="at least two runs"):
        build_pairs([("cfg", runs["cfg"])], HashScorer())
    assert run_pairs_job("--runs", runs["answer"], seeds_run, "--out", tmp_path / "o") == 2
    assert not (tmp_path / "o").exists()


def test_failed_samples_make_no_pairs(runs, tmp_path):
    broken = tmp_path / "answer"
    shutil.copytree(runs["answer"], broken)
    table = pq.read_table(broken / "index.parquet")
    rows = table.to_pylist()
    for row in rows:
        if row["key"] == "fox_0":
            row["status"], row["error"] = "failed", "RuntimeError: simulated"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), broken / "index.parquet")
    pairs = build_pairs([("cfg", runs["cfg"]), ("answer", broken)], HashScorer())
    assert sorted(p.key for p in pairs) == [k for k in KEYS if k != "fox_0"] and pairs.skipped_not_ok == 1


def test_cli_end_to_end(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert run_pairs_job("--runs", runs["cfg"], runs["answer"], runs["dns"], "--out", out,
                         "--scorer", "by-method", "--recompute", "--min-margin", "0.5") == 0
    line = capsys.readouterr().out
    assert "16 pairs" in line and "8 skipped by margin" in line and str(out) in line
    manifest = json.loads((out / "pairs_manifest.json").read_text())
    assert manifest["counts"]["pairs"] == 16 and manifest["inputs"]["scorer"] == "by-method-recompute"
    assert [r["name"] for r in manifest["inputs"]["runs"]] == ["cfg", "answer", "dns"]
    assert len(read_shards(out)) == 16 and not (out / "_tmp").exists()

    assert run_pairs_job("--runs", runs["cfg"], runs["dns"], "--out", tmp_path / "x") == 2
    assert "run dns has no clip_score" in capsys.readouterr().err
    assert run_pairs_job("--runs", runs["cfg"], runs["answer"], "--out", runs["cfg"]) == 2
    assert "holds other files" in capsys.readouterr().err


def test_write_pairs_to_memory(runs):
    pairs = build_pairs([("cfg", runs["cfg"]), ("answer", runs["answer"])], HashScorer())
    write_pairs(pairs, "memory://pairs-test/out")
    fs = fsspec.filesystem("memory")
    try:
        assert json.loads(fs.cat("/pairs-test/out/pairs_manifest.json"))["counts"]["pairs"] == 8
        assert pq.read_table(fs.open("/pairs-test/out/pairs.parquet", "rb")).num_rows == 8
    finally:
        fs.rm("/pairs-test", recursive=True)


def test_resolve_runs_names():
    assert resolve_runs(["/a/out", "/b/out/", "/c/out", "/d/cfg"]) == [
        ("out", "/a/out"), ("out-2", "/b/out/"), ("out-3", "/c/out"), ("cfg", "/d/cfg")]
    with pytest.raises(ValueError, match="points are for a single sweep"):
        resolve_runs(["/a/x", "/b/y"], points=["a"])


def test_sweep(runs, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    points = []
    for name in ("cfg", "answer", "dns"):
        shutil.copytree(runs[name], sweep / "points" / name)
        points.append({"name": name, "overrides": {"method": name}, "dir": f"points/{name}"})
    (sweep / "sweep.json").write_text(json.dumps({"name": "methods", "baseline": "cfg", "points": points}))

    assert resolve_runs(str(sweep)) == [(n, f"{sweep}/points/{n}") for n in ("cfg", "answer", "dns")]
    assert [n for n, _ in resolve_runs(str(sweep), ["dns", "cfg"])] == ["dns", "cfg"]
    with pytest.raises(ValueError, match="has no point"):
        resolve_runs(str(sweep), ["nope"])
    with pytest.raises(ValueError, match="not a sweep directory"):
        resolve_runs(str(runs["cfg"]), ["cfg"])

    out = tmp_path / "sweep-pairs"
    assert run_pairs_job("--sweep", sweep, "--points", "cfg,dns", "--scorer", "hash", "--recompute", "--out", out) == 0
    assert "8 pairs" in capsys.readouterr().out
    rows = pq.read_table(out / "pairs.parquet").to_pylist()
    assert {(r["model_0"], r["model_1"]) for r in rows} == {("cfg", "dns")}
    assert run_pairs_job("--sweep", sweep, "--scorer", "hash", "--recompute", "--out", tmp_path / "all") == 0
    assert "24 pairs" in capsys.readouterr().out
    assert run_pairs_job("--sweep", sweep, "--points", "cfg,zzz", "--out", tmp_path / "bad") == 2
    assert "has no point(s) zzz" in capsys.readouterr().err
