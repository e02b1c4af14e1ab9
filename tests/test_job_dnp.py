"""The job's DNP family: auto-DNP (two stages) and CNP, two-phase human DNP, errors."""

import json

import pytest
from PIL import Image
import io

from jobutil import EXAMPLE_KEYS, FAST, PROMPTS, read_run, records, run_job


@pytest.mark.parametrize("method", ["auto-dnp", "cnp"])
def test_captioned_methods_store_dns_images_captions_and_scores(tmp_path, method):
    out = tmp_path / "out"
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", method, "--out", out) == 0
    samples = read_run(out)
    assert sorted(samples) == EXAMPLE_KEYS
    for files in samples.values():
        assert sorted(files) == ["dns.png", "json", "png", "txt"]
        assert Image.open(io.BytesIO(files["dns.png"])).size == (64, 64)
        r = json.loads(files["json"])
        assert r["method"] == method and isinstance(r["negative_prompt"], str)
        assert r["captioner"] == {"model": "tiny-blip2", "max_new_tokens": 30, "prompt": None}
        assert r["clip_score"] >= 0 and r["dns_clip_score"] >= 0 and r["clip_model"] == "tiny-clip"
        assert r["captions"] >= 1
        assert r["nfe"] == (4 * 10 if method == "auto-dnp" else 2 * 10 + 2 * sum(range(1, 11)))  # tiny-sd: 10 steps
    if method == "cnp":
        assert all(r["captions"] == 10 and r["cnp_every"] == 1 for r in records(out).values())


def test_auto_dnp_job_equals_np_with_its_captions(tmp_path):
    """The two-stage DAG (DNS + caption, then NP) gives the images NP gives with the recorded n*."""
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", "auto-dnp", "--out", tmp_path / "a") == 0
    auto = read_run(tmp_path / "a")
    negatives = tmp_path / "neg.jsonl"
    negatives.write_text("".join(json.dumps({"id": k, "negative_prompt": json.loads(v["json"])["negative_prompt"]})
                                 + "\n" for k, v in auto.items()))
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--negatives", negatives, "--out", tmp_path / "b") == 0
    dnp = read_run(tmp_path / "b")
    assert {k: v["png"] for k, v in auto.items()} == {k: v["png"] for k, v in dnp.items()}


def test_human_dnp_two_phases(tmp_path):
    phase1 = tmp_path / "phase1"
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", "dns", "--seeds", 2, "--out", phase1) == 0
    rows = [json.loads(line) for line in (phase1 / "negatives.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(read_run(phase1))
    assert all(r["negative_prompt"] == "" for r in rows) and len(rows) == 8

    edited = tmp_path / "edited.jsonl"
    for r in rows:
        r["negative_prompt"] = "" if r["id"] == "fox_1" else f"a dull picture unlike {r['prompt']}"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    phase2 = tmp_path / "phase2"
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--seeds", 2, "--negatives", edited, "--out", phase2) == 0
    recs = records(phase2)
    assert len(recs) == 8 and all(r["method"] == "dnp" for r in recs.values())
    assert recs["city_1"]["negative_prompt"] == "a dull picture unlike an isometric city block at night with neon signs"
    assert recs["fox_1"]["empty_negative"] is True and recs["city_1"]["empty_negative"] is False
    assert not (phase2 / "negatives.jsonl").exists()


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda rows: rows + [{"id": "ghost_0", "negative_prompt": "x"}], "unknown id 'ghost_0'"),
        (lambda rows: rows[1:], "has no line for 1 sample(s)"),
        (lambda rows: rows + rows[:1], "duplicate id"),
        (lambda rows: [{**rows[0], "prompt": "something else"}] + rows[1:], "has prompt 'something else'"),
        (lambda rows: [{"id": rows[0]["id"]}] + rows[1:], 'needs a string "id" and a string "negative_prompt"'),
    ],
)
def test_bad_negatives_files_write_nothing(tmp_path, capsys, mutate, message):
    rows = [{"id": f"{k}_0", "prompt": p, "negative_prompt": "n"} for k, p in [
        ("fox", "a red fox sitting in fresh snow, golden hour"),
        ("teapot", "a glass teapot with blooming tea on a wooden table"),
        ("city", "an isometric city block at night with neon signs"),
        ("astronaut", "an astronaut riding a horse on the moon")]]
    negatives = tmp_path / "neg.jsonl"
    negatives.write_text("".join(json.dumps(r) + "\n" for r in mutate(rows)))
    out = tmp_path / "out"
    assert run_job("--prompts", PROMPTS, "--negatives", negatives, "--out", out) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_negatives_with_another_method_is_refused(tmp_path, capsys):
    negatives = tmp_path / "neg.jsonl"
    negatives.write_text("")
    assert run_job("--prompts", PROMPTS, "--negatives", negatives, "--method", "cfg", "--out", tmp_path / "o") == 2
    assert "--negatives is for method dnp" in capsys.readouterr().err


def test_dnp_without_negatives_hints_at_phase_two(tmp_path, capsys):
    assert run_job("--prompts", PROMPTS, "--method", "dnp", "--out", tmp_path / "o") == 2
    assert "--negatives" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "config_text,message",
    [
        ("method: auto-dnp\ncaptioner:\n  model: {model}\n", "is not a BLIP-2 model"),
        ("clip:\n  model: ViT-Nope-99\n", "ViT-Nope-99"),
    ],
)
def test_bad_captioner_or_clip_model_writes_nothing(tmp_path, capsys, config_text, message):
    not_blip = tmp_path / "not-blip"
    not_blip.mkdir()
    (not_blip / "config.json").write_text('{"model_type": "clip"}')
    config = tmp_path / "c.yaml"
    config.write_text(config_text.format(model=not_blip))
    assert run_job("--prompts", PROMPTS, "--config", config, "--out", tmp_path / "o") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
