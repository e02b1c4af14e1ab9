"""A dataset proves itself: jobs/verify.py checks shard digests, members, keys and counts; resume
runs the same check and regenerates a damaged shard."""

import importlib.util
import json

import pytest

from jobutil import FAST, PROMPTS, REPO, read_run, run_job


def verify(*args) -> int:
    spec = importlib.util.spec_from_file_location("verify_job", REPO / "jobs" / "verify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "run"
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", "cfg", "--samples-per-shard", "2",
                   "--set", "steps=2", "--out", out) == 0
    return out


def test_a_finished_run_verifies_and_its_manifest_holds_every_shard_digest(run_dir, capsys):
    assert verify(run_dir) == 0
    assert capsys.readouterr().out.startswith("ok: 1 run(s), 4 samples")
    digests = json.loads((run_dir / "manifest.json").read_text())["shard_digests"]
    assert [d["name"] for d in digests] == ["shard-00000.tar", "shard-00001.tar"]
    assert all(len(d["sha256"]) == 64 and d["size"] == (run_dir / d["name"]).stat().st_size and d["samples"] == 2
               for d in digests)


def test_every_problem_is_listed_and_resume_regenerates_damaged_shards(run_dir, capsys):
    before = read_run(run_dir)
    corrupted = bytearray((run_dir / "shard-00000.tar").read_bytes())
    corrupted[600] ^= 0xFF  # inside the first member's data: the tar still reads
    (run_dir / "shard-00000.tar").write_bytes(bytes(corrupted))
    shard1 = run_dir / "shard-00001.tar"
    shard1.write_bytes(shard1.read_bytes()[:1000])  # truncated, as a crash mid-copy leaves it
    (run_dir / "shard-00007.tar").write_bytes(b"")  # a stray file
    assert verify(run_dir) == 1
    out = capsys.readouterr().out
    assert "shard-00000.tar: sha256 differs" in out and "shard-00001.tar: 1000 bytes, but" in out
    assert "shard-00007.tar" in out and "not in manifest.json" in out
    (run_dir / "shard-00007.tar").unlink()
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", "cfg", "--samples-per-shard", "2",
                   "--set", "steps=2", "--out", run_dir, "--resume") == 0
    assert "regenerating shard 00000" in capsys.readouterr().err
    assert verify(run_dir) == 0
    after = read_run(run_dir)
    assert {k: v["png"] for k, v in after.items()} == {k: v["png"] for k, v in before.items()}


def test_missing_shard_and_unfinished_run(run_dir, capsys):
    (run_dir / "shard-00001.tar").unlink()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    assert verify(run_dir) == 1
    out = capsys.readouterr().out
    assert "shard-00001.tar: missing" in out and "status 'running'" in out
    assert verify(run_dir.parent / "nothing") == 1
    assert "no manifest.json" in capsys.readouterr().out


def test_models_load_from_safetensors_only(tmp_path, tiny_sd_dir):
    """A pipeline dir whose weights are only pickled .bin files is refused before any load."""
    import shutil

    from dnp_batch import load_pipeline

    bad = tmp_path / "pickled"
    shutil.copytree(tiny_sd_dir, bad)
    weights = bad / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ValueError, match=r"unet holds only pickled \.bin weights; dnp_batch loads safetensors only"):
        load_pipeline(bad)


def test_every_record_names_the_exact_local_model(run_dir):
    """tiny-* and toy-shapes records carry the resolved path and a content digest of the model dir,
    so a sample can be replayed from its record alone."""
    from dnp_batch.models import model_digest
    from dnp_batch.names import resolve_model

    rec = next(iter(read_run(run_dir).values()))["json"]
    rec = json.loads(rec)
    assert rec["model"] == "tiny-sd" and rec["model_path"] == resolve_model("tiny-sd")
    assert rec["model_digest"] == model_digest(rec["model_path"]) and rec["model_digest"].startswith("sha256:")


def _poison_decoder(monkeypatch, dtypes):
    """Loaded pipelines of these dtypes decode NaN for the first sample of every batch."""
    from dnp_batch.stages import pipelines as stages

    real = stages.load_pipeline

    def load(source, dtype="float32", device="cpu", **kw):
        pipe = real(source, dtype=dtype, device=device, **kw)
        if dtype in dtypes:
            def hook(module, args, output):
                output[0] = float("nan")
                return output
            pipe.vae.decoder.register_forward_hook(hook)
        return pipe

    monkeypatch.setattr(stages, "load_pipeline", load)


def test_nan_images_are_retried_in_float32_never_written_black(tmp_path, monkeypatch):
    _poison_decoder(monkeypatch, {"bfloat16"})
    out = tmp_path / "o"
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", "cfg", "--set", "steps=2",
                   "--set", "dtype=bfloat16", "--out", out) == 0
    recs = {k: json.loads(v["json"]) for k, v in read_run(out).items()}
    retried = [r for r in recs.values() if "precision_retry" in r]
    assert len(recs) == 4 and len(retried) == 1 and retried[0]["dtype"] == "float32"
    assert all(r["dtype"] == "bfloat16" for r in recs.values() if r not in retried)
    from PIL import Image
    import io
    import numpy as np
    for files in read_run(out).values():
        assert np.asarray(Image.open(io.BytesIO(files["png"]))).max() > 0  # no black image


def test_a_sample_still_nan_in_float32_is_marked_failed_with_the_reason(tmp_path, monkeypatch):
    _poison_decoder(monkeypatch, {"bfloat16", "float32"})
    prompts = tmp_path / "one.txt"
    prompts.write_text("a red cube\n")
    out = tmp_path / "o"
    assert run_job("--prompts", prompts, "--config", FAST, "--method", "cfg", "--set", "steps=2",
                   "--set", "dtype=bfloat16", "--out", out) == 0
    from jobutil import index
    (row,) = index(out)
    assert row["status"] == "failed" and "non-finite values (NaN/inf)" in row["error"]
    assert "bfloat16 and again in float32" in row["error"] and read_run(out) == {}
