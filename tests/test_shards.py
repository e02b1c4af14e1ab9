"""The output reads back unchanged with webdataset and HF datasets (Ray Data: tests/test_ray.py); failures are indexed."""

import glob
import json

import pytest

from jobutil import EXAMPLE_KEYS, FAST, PROMPTS, index, read_run, run_job


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", "auto-dnp", "--samples-per-shard", 3,
                   "--out", out) == 0
    return out


def tars(out) -> list[str]:
    return sorted(glob.glob(f"{out}/shard-*.tar"))


def test_webdataset_reads_every_sample_unchanged(run_dir):
    import webdataset as wds

    expected = read_run(run_dir)
    seen = {}
    for sample in wds.WebDataset(tars(run_dir), shardshuffle=False):
        seen[sample["__key__"]] = {k: v for k, v in sample.items() if not k.startswith("__")}
    assert seen == expected
    assert sorted(seen) == EXAMPLE_KEYS and len(tars(run_dir)) == 2



def test_hf_datasets_reads_the_shards(run_dir):
    from datasets import load_dataset

    ds = load_dataset("webdataset", data_files={"train": tars(run_dir)}, split="train")
    assert len(ds) == 4
    assert sorted(ds["__key__"]) == EXAMPLE_KEYS
    row = ds[0]
    assert row["png"].size == (64, 64) and row["dns.png"].size == (64, 64)
    record = row["json"]
    assert record["id"] == row["__key__"] and record["method"] == "auto-dnp" and row["txt"] == record["prompt"]


def test_index_and_manifest(run_dir):
    rows = index(run_dir)
    assert sorted(r["key"] for r in rows) == EXAMPLE_KEYS and {r["status"] for r in rows} == {"ok"}
    assert {r["shard"] for r in rows} == {0, 1}
    for r in rows:
        assert json.loads(r["record"])["id"] == r["key"] and r["clip_score"] is not None
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["method"] == "auto-dnp" and manifest["shards"] == 2
    assert manifest["counts"] == {"samples": 4, "ok": 4, "failed": 0, "shards": 2, "generated_this_run": 4}
    assert manifest["versions"]["diffusers"]
    assert not (run_dir / "_tmp").exists()


def test_a_sample_that_raises_is_indexed_as_failed_and_the_rest_completes(tmp_path, monkeypatch):
    """A stage that raises on one sample: its batch is retried sample by sample; the sample is
    recorded as failed with its error, every other sample is written."""
    from dnp_batch import api

    real = api.generate

    def flaky(pipe, prompts, *args, **kwargs):
        if any("teapot" in p for p in prompts):
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        return real(pipe, prompts, *args, **kwargs)

    monkeypatch.setattr(api, "generate", flaky)
    out = tmp_path / "o"
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--out", out) == 0
    assert sorted(read_run(out)) == ["astronaut_0", "city_0", "fox_0"]
    rows = {r["key"]: r for r in index(out)}
    assert sorted(rows) == EXAMPLE_KEYS
    assert rows["teapot_0"]["status"] == "failed" and "illegal memory access" in rows["teapot_0"]["error"]
    assert json.loads(rows["teapot_0"]["record"])["prompt"].startswith("a glass teapot")
    assert all(rows[k]["status"] == "ok" for k in ("astronaut_0", "city_0", "fox_0"))
    assert json.loads((out / "manifest.json").read_text())["counts"]["failed"] == 1


def test_the_write_stage_needs_neither_torch_nor_the_config(tmp_path):
    """Under Ray, shared-storage outputs are written by write actors: a row made by the model stages,
    written in a fresh process, gives the same shard bytes as the in-process writer, and that process
    never imports torch, diffusers or the job config (its start-up stays about a second)."""
    import pickle
    import subprocess
    import sys

    from dnp_batch import rows
    from dnp_batch.config import load_config
    from dnp_batch.prompts import expand_samples, read_prompts
    from dnp_batch.stages import WriteStage, build_stages
    from jobutil import FAST, PROMPTS, read_run

    cfg = load_config(FAST, method="cfg", sets=["steps=2"])
    samples = expand_samples(read_prompts(PROMPTS), 1)[:2]
    row = rows.new_row(0, cfg, str(tmp_path / "here"), samples)
    for spec in build_stages([cfg])[:-1]:
        row = spec.cls([cfg])(row)
    WriteStage([cfg])(row)
    (tmp_path / "row.pkl").write_bytes(pickle.dumps({**row, "out": str(tmp_path / "there")}))
    code = ("import pickle, sys; from dnp_batch.stages import WriteStage; "
            f"summary = WriteStage()(pickle.loads(open({str(tmp_path / 'row.pkl')!r}, 'rb').read())); "
            "print(summary['samples'], sorted({'torch', 'diffusers', 'dnp_batch.config'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[0] == "2 []"
    assert read_run(tmp_path / "there") == read_run(tmp_path / "here")
