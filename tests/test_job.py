"""jobs/generate.py end to end: configs, determinism, bad input (the README quick-start on Ray: tests/test_ray.py)."""

import io
import json
import os

import pytest
from PIL import Image

from jobutil import EXAMPLE_KEYS, FAST, PROMPTS, read_run, records, run_job



def test_config_method_seeds_and_byte_determinism(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a cat"}\n\n{"prompt": "a dog", "id": "dog"}\n')
    args = ["--prompts", prompts, "--config", FAST, "--method", "cfg", "--seeds", 2, "--samples-per-shard", 3]
    assert run_job(*args, "--out", tmp_path / "a") == 0
    assert run_job(*args, "--out", tmp_path / "b") == 0
    a, b = read_run(tmp_path / "a"), read_run(tmp_path / "b")
    assert len(a) == 4 and "dog_1" in a and len(list((tmp_path / "a").glob("shard-*.tar"))) == 2
    assert {k: v["png"] for k, v in a.items()} == {k: v["png"] for k, v in b.items()}
    record = json.loads(a["dog_1"]["json"])
    assert record["method"] == "cfg" and record["seed"] == 1 and record["scheduler"] == "DDIMScheduler"


def test_seed_list_and_set_overrides_and_jpeg(tmp_path):
    out = tmp_path / "o"
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--seeds", "0,7", "--set", "answer.k=3",
                   "--set", "output.image_format=jpg", "--out", out) == 0
    samples = read_run(out)
    assert sorted(samples) == sorted(f"{k[:-2]}_{s}" for k in EXAMPLE_KEYS for s in (0, 7))
    record = json.loads(samples["fox_7"]["json"])
    assert record["answer"]["k"] == 3 and record["seed"] == 7
    assert Image.open(io.BytesIO(samples["fox_7"]["jpg"])).format == "JPEG"


def test_np_reads_negatives_from_the_prompts_file(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "a cat", "negative_prompt": "a dog", "style": "photo"}\n')
    assert run_job("--prompts", prompts, "--config", FAST, "--method", "np", "--out", tmp_path / "o") == 0
    record = records(tmp_path / "o")["a_0"]
    assert record["negative_prompt"] == "a dog" and record["metadata"] == {"style": "photo"}


def test_memory_url_output(tmp_path):
    import fsspec

    assert run_job("--prompts", PROMPTS, "--config", FAST, "--out", "memory://dnp-test/run") == 0
    fs = fsspec.filesystem("memory")
    assert fs.exists("/dnp-test/run/shard-00000.tar") and fs.exists("/dnp-test/run/index.parquet")
    fs.rm("/dnp-test", recursive=True)


@pytest.mark.parametrize(
    "prompts_text,extra,message",
    [
        ('{"prompt": "ok"}\n{"prompt": "broken"\n', [], "line 2 is not valid JSON"),
        ("", [], "holds no prompts"),
        ('{"text": "no prompt key"}\n', [], 'line 1: each line must be an object with a string "prompt"'),
        ('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', [], "duplicate sample 'x_0'"),
        ('{"prompt": "a", "id": "x.y"}\n', [], "prompt id 'x.y' may only hold"),
        ('{"prompt": "a"}\n', ["--method", "np"], "needs a negative_prompt for every prompt"),
        ('{"prompt": "a"}\n', ["--set", "answer.kk=3"], "answer.kk: Extra inputs are not permitted"),
        ('{"prompt": "a"}\n', ["--set", "nonsense"], "expected KEY=VALUE"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, capsys, prompts_text, extra, message):
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
    assert run_job("--prompts", PROMPTS, "--config", config, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert message in err and str(config) in err
    assert not (tmp_path / "o").exists()


def test_model_dir_that_is_not_a_pipeline_writes_nothing(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tmp_path / 'model'}\n")
    assert run_job("--prompts", PROMPTS, "--config", config, "--out", tmp_path / "o") == 2
    assert "is not a diffusers pipeline directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_size_for_the_model_writes_nothing(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: tiny-sd\nheight: 60\nwidth: 64\nsteps: 2\n")
    assert run_job("--prompts", PROMPTS, "--config", config, "--out", tmp_path / "o") == 2
    assert "height must be a positive multiple of the VAE factor 8" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unwritable_out_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--out", blocker / "out") == 2
    assert f"--out {blocker / 'out'} is not writable" in capsys.readouterr().err


def test_out_with_foreign_files_is_refused(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "thesis.pdf").write_text("precious")
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--out", tmp_path / "o") == 2
    assert "is not empty and holds no dnp_batch run" in capsys.readouterr().err
    assert os.listdir(tmp_path / "o") == ["thesis.pdf"]


def test_judge_scores_travel_in_records(tmp_path):
    """The toy world's judge, switched on for any model: a verdict for prompts of its grammar."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "toy", "prompt": "a red circle to the left of a blue square"}\n'
                       '{"id": "free", "prompt": "an astronaut riding a horse"}\n')
    assert run_job("--prompts", prompts, "--config", FAST, "--method", "auto-dnp", "--set", "judge=true",
                   "--set", "captioner.model=toyworld-judge", "--out", tmp_path / "o") == 0
    recs = records(tmp_path / "o")
    verdict = recs["toy_0"]["judge"]
    assert set(verdict) == {"shape", "colour", "count", "relation", "all"}
    assert all(v in (0.0, 1.0) for v in verdict.values()) and set(recs["toy_0"]["dns_judge"]) == set(verdict)
    assert recs["free_0"]["judge"] is None and recs["toy_0"]["captioner"]["model"] == "toyworld-judge"


def test_partiprompts_tsv_with_repeated_rows_runs_once_per_sample(tmp_path, capsys):
    """A PartiPrompts-style TSV with two rows of the same text: the job generates the sample once
    and says how many rows it folded (it used to stop with 'prompt ids must be unique')."""
    tsv = tmp_path / "parti.tsv"
    tsv.write_text("Prompt\tCategory\tChallenge\tNote\na red cube\tArtifacts\tBasic\t\n"
                   '"STOP" on a sign\tWriting\tText\t\na red cube\tArtifacts\tBasic\tagain\n', encoding="utf-8")
    assert run_job("--prompts", tsv, "--config", FAST, "--method", "cfg", "--out", tmp_path / "o") == 0
    assert "1 duplicate row(s) folded" in capsys.readouterr().err
    recs = records(tmp_path / "o")
    assert sorted(r["prompt"] for r in recs.values()) == ['"STOP" on a sign', "a red cube"]
    cube = next(r for r in recs.values() if r["prompt"] == "a red cube")
    assert cube["metadata"] == {"Category": "Artifacts", "Challenge": "Basic"}  # the first row's
