import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from dnp_batch import tiny
from dnp_batch.models import SCHEDULERS, load_pipeline, set_scheduler
from dnp_batch.tiny import build_tiny, cache_root, ensure_tiny

REPO_ROOT = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["sd", "sdxl", "sd3", "qwenimage"])
def test_build_is_byte_identical(kind, request, tmp_path):
    first = request.getfixturevalue(f"tiny_{kind}_dir")
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    second = build_tiny(kind, tmp_path / kind)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG state is left alone

    a, b = _files(first), _files(second)
    assert "model_index.json" in a and len(a) >= 10
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == []


def test_build_refuses_nonempty_dir_and_unknown_kind(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        build_tiny("sd", tmp_path)
    with pytest.raises(ValueError, match="sdxl"):
        build_tiny("nope", tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_cli_builds_and_prints_dir(tmp_path):
    out = tmp_path / "cli-sd"
    pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    proc = subprocess.run(
        [sys.executable, "-m", "dnp_batch.tiny", "--kind", "sd", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == str(out.absolute())
    assert isinstance(load_pipeline(out), StableDiffusionPipeline)


def test_cli_refuses_nonempty_out_unless_forced(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(SystemExit) as exc:
        tiny.main(["--kind", "sd", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--force" in capsys.readouterr().err
    assert tiny.main(["--kind", "sd", "--out", str(tmp_path), "--force"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path.absolute())
    assert (tmp_path / "model_index.json").is_file() and not (tmp_path / "keep.txt").exists()


def test_ensure_tiny_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("DNP_BATCH_CACHE", str(tmp_path / "env-cache"))
    assert cache_root() == tmp_path / "env-cache"
    path = ensure_tiny("sd", tmp_path / "cache")
    assert path == (tmp_path / "cache" / f"tiny-sd-{tiny.CACHE_VERSION}").absolute()
    stamp = (path / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny("sd", tmp_path / "cache") == path
    assert (path / "model_index.json").stat().st_mtime_ns == stamp


def test_ensure_tiny_uses_the_winner_of_a_race(tmp_path, monkeypatch):
    final = tmp_path / f"tiny-sd-{tiny.CACHE_VERSION}"

    def build_while_another_process_finishes(out: Path) -> None:
        (out / "model_index.json").write_text("{}")
        final.mkdir()
        (final / "model_index.json").write_text('{"winner": true}')

    monkeypatch.setitem(tiny.BUILDERS, "sd", build_while_another_process_finishes)
    assert ensure_tiny("sd", tmp_path) == final.absolute()
    assert (final / "model_index.json").read_text() == '{"winner": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-sd-{tiny.CACHE_VERSION}"]  # no temp dir left


@pytest.mark.parametrize("fixture, cls", [("tiny_sdxl", StableDiffusionXLPipeline), ("tiny_sd", StableDiffusionPipeline)])
def test_tiny_pipeline_runs(fixture, cls, request):
    pipe = request.getfixturevalue(fixture)
    assert isinstance(pipe, cls) and pipe.vae_scale_factor == 8
    images = pipe(prompt="a red cube", num_inference_steps=2, height=64, width=64, output_type="np").images
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()


def test_tiny_default_schedulers(tiny_sdxl, tiny_sd):
    assert isinstance(tiny_sdxl.scheduler, EulerDiscreteScheduler)
    assert tiny_sdxl.scheduler.config.timestep_spacing == "leading"
    assert isinstance(tiny_sd.scheduler, DDIMScheduler)
    assert tiny_sd.scheduler.config.steps_offset == 1
    assert not tiny_sd.scheduler.config.set_alpha_to_one


def test_load_rejects_dir_without_model_index(tmp_path):
    with pytest.raises(ValueError, match="model_index.json") as exc:
        load_pipeline(tmp_path)
    assert str(tmp_path) in str(exc.value)


def test_load_rejects_unknown_id():
    with pytest.raises(ValueError, match="no-such-org/no-such-model"):
        load_pipeline("no-such-org/no-such-model")


def test_unknown_scheduler_raises(tiny_sd_dir, tiny_sd):
    with pytest.raises(ValueError, match="euler_a"):
        load_pipeline(tiny_sd_dir, scheduler="nope")
    with pytest.raises(ValueError, match="unknown scheduler 'nope'"):
        set_scheduler(tiny_sd, "nope")


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_swap_keeps_config(name, tiny_sdxl):
    set_scheduler(tiny_sdxl, name)
    assert type(tiny_sdxl.scheduler) is SCHEDULERS[name]
    assert tiny_sdxl.scheduler.config.beta_schedule == "scaled_linear"
    assert tiny_sdxl.scheduler.config.steps_offset == 1
    if name == "ddim":  # SDXL's DDIM settings travel in the Euler config
        assert not tiny_sdxl.scheduler.config.set_alpha_to_one
        assert not tiny_sdxl.scheduler.config.clip_sample


def test_load_with_scheduler_and_dtype(tiny_sd_dir):
    pipe = load_pipeline(tiny_sd_dir, dtype="bf16", scheduler="euler_a")
    assert pipe.unet.dtype == torch.bfloat16
    assert type(pipe.scheduler) is SCHEDULERS["euler_a"]
    with pytest.raises(ValueError, match="unknown dtype"):
        load_pipeline(tiny_sd_dir, dtype="int8")
