"""The product on the flow-matching families' tiny twins: every method through one sweep job (its
scorers, report and resume), human DNP's two phases, preference pairs, and `jobs/verify.py` on
every dataset. auto-DNP's two-stage Ray DAG under `ray job submit` on tiny SD3.5: tests/test_ray.py."""

import importlib.util
import json

import pytest

from jobutil import PROMPTS, REPO, read_run, records, run_job

CONFIGS = {"sd3": REPO / "configs" / "tiny-sd3.yaml", "qwenimage": REPO / "configs" / "tiny-qwenimage.yaml"}
METHODS = ["cfg", "dns", "answer", "auto-dnp", "cnp", "apg"]
SCORES = {"scores": ["clip", "pickscore", "hps", "imagereward", "aesthetic"],
          "scorers": {"pickscore": {"model": "tiny-pickscore"}, "hps": {"model": "tiny-hps"},
                      "imagereward": {"model": "tiny-imagereward"}, "aesthetic": {"model": "tiny-aesthetic"}}}


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_job", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_every_method_as_a_sweep_job_verified_reported_resumed_and_paired(family, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps({"name": family, "config": str(CONFIGS[family]), "set": {"steps": 3, **SCORES},
                                 "seeds": 1, "baseline": "cfg",
                                 "points": [{"name": m, "method": m} for m in METHODS]}))
    out = tmp_path / "out"
    sweep_main = _job("sweep")
    assert sweep_main(["--sweep", str(sweep), "--prompts", str(PROMPTS), "--out", str(out), "--distributor", "local"]) == 0
    assert _job("verify")([str(out)]) == 0
    assert (out / "report" / "index.html").exists() and (out / "comparison.parquet").exists()
    for method in METHODS:
        recs = records(out / "points" / method)
        assert len(recs) == 4
        for r in recs.values():
            assert r["method"] == method and r["family"] == family
            assert r["scheduler"] == "FlowMatchEulerDiscreteScheduler" and r["scheduler_config"]["shift"] > 0
            assert set(r["scores"]) == set(SCORES["scores"])
    before = {m: read_run(out / "points" / m) for m in METHODS}
    assert sweep_main(["--sweep", str(sweep), "--prompts", str(PROMPTS), "--out", str(out), "--distributor", "local"]) == 0
    assert {m: read_run(out / "points" / m) for m in METHODS} == before  # resumed: nothing redone
    pairs = tmp_path / "pairs"
    assert _job("pairs")(["--sweep", str(out), "--points", "cfg,answer", "--out", str(pairs), "--scorer", "pickscore"]) == 0
    assert (pairs / "pairs.parquet").exists()


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_human_dnp_two_phases(family, tmp_path):
    phase1 = tmp_path / "phase1"
    assert run_job("--prompts", PROMPTS, "--config", CONFIGS[family], "--method", "dns", "--set", "steps=3",
                   "--out", phase1) == 0
    rows = [json.loads(line) for line in (phase1 / "negatives.jsonl").read_text().splitlines()]
    edited = tmp_path / "negatives.jsonl"
    edited.write_text("".join(json.dumps({**r, "negative_prompt": "a blurry photo"}) + "\n" for r in rows))
    phase2 = tmp_path / "phase2"
    assert run_job("--prompts", PROMPTS, "--config", CONFIGS[family], "--negatives", edited, "--set", "steps=3",
                   "--out", phase2) == 0
    assert _job("verify")([str(phase2)]) == 0
    recs = records(phase2)
    assert len(recs) == 4 and all(r["method"] == "dnp" and r["negative_prompt"] == "a blurry photo"
                                  and r["family"] == family for r in recs.values())
