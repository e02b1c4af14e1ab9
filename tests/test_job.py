"""jobs/generate.py end to end: the README quick-start, configs, determinism, bad input."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "generate.py"


def load_job():
    spec = importlib.util.spec_from_file_location("generate_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_job(*args) -> int:
    return load_job().main([str(a) for a in args])


def test_readme_quickstart_command(tmp_path):
    """The README's main-job command, as a user runs it, on the built-in defaults."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "jobs/generate.py", "--prompts", "examples/prompts.jsonl", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    keys = sorted(p.stem for p in out.glob("*.png"))
    assert keys == ["astronaut_0", "city_0", "fox_0", "teapot_0"]
    for key in keys:
        record = json.loads((out / f"{key}.json").read_text())
        assert record["id"] == key and record["method"] == "answer" and record["model"] == "tiny-sdxl"
        assert record["nfe"] == 120 and record["answer"]["k"] == 2 and record["num_inference_steps"] == 30
        assert record["clip_score"] >= 0 and record["clip_model"] == "tiny-clip"
        assert Image.open(out / f"{key}.png").size == (64, 64)
    assert "wrote 4 samples" in proc.stdout


def test_config_method_and_seeds_and_byte_determinism(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a cat"}\n\n{"prompt": "a dog", "id": "dog"}\n')
    args = ["--prompts", prompts, "--config", REPO / "configs/tiny-sd.yaml", "--method", "cfg", "--seeds", 2]
    assert run_job(*args, "--out", tmp_path / "a") == 0
    assert run_job(*args, "--out", tmp_path / "b") == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) == 8 and "dog_1.png" in files
    for name in files:
        if name.endswith(".png"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    record = json.loads((tmp_path / "a" / "dog_1.json").read_text())
    assert record["method"] == "cfg" and record["seed"] == 1 and record["scheduler"] == "DDIMScheduler"


def test_np_reads_negatives_from_the_prompts_file(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "a cat", "negative_prompt": "a dog"}\n')
    assert run_job("--prompts", prompts, "--config", REPO / "configs/tiny-sd.yaml", "--method", "np",
                   "--out", tmp_path / "o") == 0
    assert json.loads((tmp_path / "o" / "a_0.json").read_text())["negative_prompt"] == "a dog"


@pytest.mark.parametrize(
    "prompts_text,extra,message",
    [
        ('{"prompt": "ok"}\n{"prompt": "broken"\n', [], "line 2 is not valid JSON"),
        ("", [], "holds no prompts"),
        ('{"text": "no prompt key"}\n', [], 'line 1: each line must be an object with a string "prompt"'),
        ('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', [], "duplicate sample 'x_0'"),
        ('{"prompt": "a", "id": "x.y"}\n', [], "prompt id 'x.y' may only hold"),
        ('{"prompt": "a"}\n', ["--method", "np"], "needs a negative_prompt for every prompt"),
    ],
)
def test_bad_prompts_write_nothing(tmp_path, capsys, prompts_text, extra, message):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(prompts_text)
    out = tmp_path / "out"
    assert run_job("--prompts", prompts, "--out", out, *extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_prompts_file(tmp_path, capsys):
    assert run_job("--prompts", tmp_path / "nope.jsonl", "--out", tmp_path / "out") == 2
    assert "prompts file" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "config_text,message",
    [
        ("methd: cfg\n", "methd: Extra inputs are not permitted"),
        ("answer:\n  k: -1\n", "answer.k"),
        ("answer:\n  until: 2\n", "answer.until"),
        ("steps: 0\n", "steps"),
        ("- a list\n", "must hold a mapping"),
    ],
)
def test_bad_config_writes_nothing(tmp_path, capsys, config_text, message):
    config = tmp_path / "c.yaml"
    config.write_text(config_text)
    assert run_job("--prompts", REPO / "examples/prompts.jsonl", "--config", config, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert message in err and str(config) in err
    assert not (tmp_path / "o").exists()


def test_model_dir_that_is_not_a_pipeline_writes_nothing(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tmp_path / 'model'}\n")
    assert run_job("--prompts", REPO / "examples/prompts.jsonl", "--config", config, "--out", tmp_path / "o") == 2
    assert "is not a diffusers pipeline directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_size_for_the_model_writes_nothing(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: tiny-sd\nheight: 60\nwidth: 64\nsteps: 2\n")
    assert run_job("--prompts", REPO / "examples/prompts.jsonl", "--config", config, "--out", tmp_path / "o") == 2
    assert "height must be a positive multiple of the VAE factor 8" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
