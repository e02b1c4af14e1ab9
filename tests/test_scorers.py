"""The scorer registry on the tiny twins: each score equals a hand computation from the model's own
outputs (loaded here without dnp_batch.scorers), and bad names or weights are one clear error."""

import json
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BlipTextModel, CLIPImageProcessor, CLIPModel, CLIPProcessor

from dnp_batch import scorer_models
from dnp_batch.scorer_models import (IMAGEREWARD_MEAN, IMAGEREWARD_STD, imagereward_text_config,
                                     imagereward_tokenizer)
from dnp_batch.scorers import load_scorer
from dnp_batch.tiny import build_tiny
from dnp_batch.toyworld.data import dataset
from dnp_batch.toyworld.judge import judge

PROMPTS = ["a red cube", "a photo of a cat at night", "", "x " * 200]


def _images(n=4):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8)).convert(["RGB", "L"][i % 2])
            for i in range(n)]


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    return {kind: build_tiny(kind, root / kind) for kind in ("pickscore", "hps", "aesthetic", "imagereward")}


def _mlp(state, prefix=""):
    """The MLP head by hand: Linear layers 0, 2, 4, 6, 7 (dropouts between are identities at eval)."""
    def run(x):
        for i, layer in enumerate((0, 2, 4, 6, 7)):
            x = x @ state[f"{prefix}layers.{layer}.weight"].T + state[f"{prefix}layers.{layer}.bias"]
        return x.squeeze(-1)
    return run


def test_pickscore_is_logit_scale_times_cosine(twins):
    d = twins["pickscore"]
    scorer = load_scorer("pickscore", {"model": str(d), "batch_size": 3})
    model, processor = CLIPModel.from_pretrained(d).eval(), CLIPProcessor.from_pretrained(d)
    expected = []
    with torch.no_grad():
        for image, prompt in zip(_images(), PROMPTS):
            out = model(**processor(text=[prompt], images=[image.convert("RGB")], return_tensors="pt",
                                    padding=True, truncation=True, max_length=77))
            expected.append(out.logits_per_image[0, 0].item())  # = logit_scale.exp() · cos
    assert scorer.score(_images(), PROMPTS) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(set(round(e, 4) for e in expected)) > 1  # the scores vary: the check can fail


def test_hps_is_the_cosine_of_the_checkpoint_loaded_into_open_clip(twins):
    d = twins["hps"]
    scorer = load_scorer("hps", {"model": str(d)})
    model = open_clip.create_model(f"local-dir:{d}")
    state = torch.load(d / "HPS_v2.1_compressed.pt", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{d}")
    size = model.visual.image_size
    with torch.no_grad():
        # HPS pads to square after resizing the longest side: by hand, on a square input it is a plain resize
        square = [im.convert("RGB").resize((64, 64)) for im in _images()]
        pixels = torch.stack([open_clip.image_transform(size, False, resize_mode="longest")(im) for im in square])
        cos = F.cosine_similarity(model.encode_image(pixels), model.encode_text(tokenizer(PROMPTS)), dim=-1)
    assert scorer.score(square, PROMPTS) == pytest.approx(cos.tolist(), abs=1e-5)
    assert scorer.model_id == str(d)


def test_aesthetic_is_the_mlp_of_the_normalised_clip_image_embedding(twins):
    d = twins["aesthetic"]
    scorer = load_scorer("aesthetic", {"model": str(d)})
    clip, processor = CLIPModel.from_pretrained(d).eval(), CLIPImageProcessor.from_pretrained(d)
    mlp = _mlp(torch.load(d / "aesthetic-model.pth", weights_only=True))
    with torch.no_grad():
        emb = clip.get_image_features(**processor(images=[im.convert("RGB") for im in _images()],
                                                  return_tensors="pt")).pooler_output
        expected = mlp(emb / emb.norm(dim=-1, keepdim=True))
    got = scorer.score(_images(), PROMPTS)
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    assert scorer.score(_images(), ["other"] * 4) == got  # the prompt plays no part


def _blip_vit(state, pixels, heads):
    """BLIP's ViT (timm layout) by hand, from ImageReward.pt's own key names."""
    p = {k[len("blip.visual_encoder."):]: v for k, v in state.items() if k.startswith("blip.visual_encoder.")}
    w = p["patch_embed.proj.weight"]
    x = F.conv2d(pixels, w, p["patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([p["cls_token"].expand(len(x), -1, -1), x], 1) + p["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in p if k.startswith("blocks."))
    width = x.shape[-1]
    for i in range(depth):
        b = lambda name: p[f"blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (width,), b("norm1.weight"), b("norm1.bias"), eps=1e-6)
        q, k, v = (h @ b("attn.qkv.weight").T + b("attn.qkv.bias")).chunk(3, dim=-1)
        split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731
        attn = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(width // heads), -1) @ split(v)
        x = x + attn.transpose(1, 2).flatten(2) @ b("attn.proj.weight").T + b("attn.proj.bias")
        h = F.layer_norm(x, (width,), b("norm2.weight"), b("norm2.bias"), eps=1e-6)
        h = F.gelu(h @ b("mlp.fc1.weight").T + b("mlp.fc1.bias")) @ b("mlp.fc2.weight").T + b("mlp.fc2.bias")
        x = x + h
    return F.layer_norm(x, (width,), p["norm.weight"], p["norm.bias"], eps=1e-6)


def test_imagereward_is_its_mlp_on_the_cross_attended_cls_token_standardised(twins):
    from torchvision import transforms

    d = twins["imagereward"]
    scorer = load_scorer("imagereward", {"model": str(d)})
    state = torch.load(d / "ImageReward.pt", weights_only=True)
    med = json.loads((d / "med_config.json").read_text())
    text = BlipTextModel(imagereward_text_config(med, 64), add_pooling_layer=False).eval()
    text.load_state_dict({k[len("blip.text_encoder."):]: v for k, v in state.items()
                          if k.startswith("blip.text_encoder.")}, strict=False)
    tok = imagereward_tokenizer(str(d))
    assert len(tok) == med["vocab_size"]  # BERT's vocab + [DEC] + [ENC], as ImageReward's tokenizer
    prep = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(32), transforms.ToTensor(),
                               transforms.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                    (0.26862954, 0.26130258, 0.27577711))])
    with torch.no_grad():
        pixels = torch.stack([prep(im.convert("RGB")) for im in _images()])
        image_embeds = _blip_vit(state, pixels, heads=1)
        # float32, the same maths in another op order (a hand-written ViT against transformers'):
        # a few ulps per layer on activations of magnitude ~1; 1e-5 bounds two layers' worth.
        assert torch.allclose(scorer.vision(pixel_values=pixels).last_hidden_state, image_embeds, atol=1e-5)
        ids = tok(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        assert ids["input_ids"].shape == (4, 35)
        out = text(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], encoder_hidden_states=image_embeds,
                   encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long))
        expected = (_mlp(state, "mlp.")(out.last_hidden_state[:, 0]) - IMAGEREWARD_MEAN) / IMAGEREWARD_STD
    assert scorer.score(_images(), PROMPTS) == pytest.approx(expected.tolist(), abs=1e-5)


def test_imagereward_keys_all_map_and_load_strictly(twins):
    state = torch.load(twins["imagereward"] / "ImageReward.pt", weights_only=True)
    parts = {}
    for key in state:
        where = scorer_models.imagereward_key(key)
        assert where is not None, key
        parts.setdefault(where[0], set()).add(where[1])
    scorer = load_scorer("imagereward", {"model": str(twins["imagereward"])})
    assert parts["vision"] == set(scorer.vision.state_dict())
    assert parts["text"] == {k for k in scorer.text.state_dict() if "position_ids" not in k}
    assert any(".crossattention." in k for k in parts["text"])  # the text encoder attends to the image


def test_judge_scorer_is_the_judges_all_correct():
    data = dataset(4, seed=3)
    images = [Image.fromarray(image) for image, _, _ in data]
    captions = [caption for _, caption, _ in data]
    captions = captions[:2] + captions[2:][::-1]  # two images with another scene's caption
    scorer = load_scorer("judge")
    got = scorer.score(images + images[:1], captions + ["a photo of an astronaut"])
    assert got[:4] == [judge(im, c)["all"] for im, c in zip(images, captions)]
    assert got[:2] == [1.0, 1.0] and 0.0 in got[2:4]
    assert got[4] is None and scorer.model_id == "toyworld-judge"


def test_tiny_names_load_the_cached_twins_and_scores_are_batched_the_same():
    one = load_scorer("pickscore", {"model": "tiny-pickscore", "batch_size": 1})
    many = load_scorer("pickscore", {"model": "tiny-pickscore", "batch_size": 8})
    assert one.model_id == "tiny-pickscore"
    assert one.score(_images(), PROMPTS) == pytest.approx(many.score(_images(), PROMPTS), abs=1e-5)


@pytest.mark.parametrize("name,settings,message", [
    ("pickscor", {}, "unknown scorer 'pickscor'; known: clip, pickscore"),
    ("hps", {"model": "not a hub id"}, "scorer hps: model 'not a hub id' is neither a local directory nor a hub id"),
    ("pickscore", {"modle": "x/y"}, "modle"),
])
def test_bad_names_and_settings(name, settings, message):
    with pytest.raises(ValueError, match=None) as err:
        load_scorer(name, settings)
    assert message in str(err.value)


def test_a_dir_without_the_checkpoint_is_named(tmp_path):
    with pytest.raises(ValueError) as err:
        load_scorer("aesthetic", {"model": str(tmp_path)})
    assert str(err.value).startswith(f"scorer aesthetic: model {tmp_path} holds no aesthetic-model.pth")


def test_unloadable_weights_are_one_line(twins, tmp_path):
    bad = tmp_path / "hps"
    bad.mkdir()
    (bad / "open_clip_config.json").write_text((twins["hps"] / "open_clip_config.json").read_text())
    (bad / "HPS_v2.1_compressed.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError) as err:
        load_scorer("hps", {"model": str(bad)})
    assert str(err.value).startswith(f"scorer hps: could not load '{bad}'") and "\n" not in str(err.value)


ALL_TINY = ["--set", "scores=[clip,pickscore,hps,imagereward,aesthetic]",
            *(f"--set=scorers.{n}.model=tiny-{n}" for n in ("pickscore", "hps", "imagereward", "aesthetic"))]


def test_a_job_records_every_configured_score_with_its_model(tmp_path):
    from jobutil import FAST, PROMPTS, records, run_job

    assert run_job("--prompts", PROMPTS, "--config", FAST, "--out", tmp_path / "plain") == 0
    assert run_job("--prompts", PROMPTS, "--config", FAST, *ALL_TINY, "--out", tmp_path / "all") == 0
    plain, scored = records(tmp_path / "plain"), records(tmp_path / "all")
    assert set(plain) == set(scored)
    for key, rec in scored.items():
        assert set(rec["scores"]) == {"clip", "pickscore", "hps", "imagereward", "aesthetic"}
        assert rec["scores"]["pickscore"]["model"] == "tiny-pickscore"
        assert all(isinstance(v["score"], float) and math.isfinite(v["score"]) for v in rec["scores"].values())
        # CLIP's numbers do not move, and clip_score stays beside the mapping
        assert rec["clip_score"] == rec["scores"]["clip"]["score"] == plain[key]["clip_score"]
        assert plain[key]["scores"] == {"clip": {"score": plain[key]["clip_score"], "model": "tiny-clip"}}


@pytest.fixture(scope="module")
def scored_runs(tmp_path_factory):
    """cfg and answer over the example prompts (seeds 0, 1), scored by clip, pickscore and aesthetic."""
    from jobutil import FAST, PROMPTS, run_job

    root = tmp_path_factory.mktemp("scored-runs")
    extra = ["--set", "scores=[clip,pickscore,aesthetic]", "--set", "scorers.pickscore.model=tiny-pickscore",
             "--set", "scorers.aesthetic.model=tiny-aesthetic", "--seeds", "0,1", "--set", "steps=4"]
    for method in ("cfg", "answer"):
        assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", method, *extra,
                       "--out", root / method) == 0
    return root


def _run_pairs(*args) -> int:
    import importlib.util

    from jobutil import REPO

    spec = importlib.util.spec_from_file_location("pairs_job", REPO / "jobs" / "pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def test_pairs_labelled_by_pickscore_load_the_diffusion_dpo_way(scored_runs, tmp_path):
    """pairs.parquet read as Diffusion-DPO's train.py reads Pick-a-Pic: datasets' parquet loader,
    `Image.open(io.BytesIO(row["jpg_0"]))`, label_0 in {0, 0.5, 1}, ties dropped, the loser flipped second."""
    import io

    import datasets

    from jobutil import records

    out = tmp_path / "pairs"
    assert _run_pairs("--runs", scored_runs / "cfg", scored_runs / "answer", "--scorer", "pickscore",
                      "--out", out) == 0
    stored = {name: records(scored_runs / name) for name in ("cfg", "answer")}
    manifest = json.loads((out / "pairs_manifest.json").read_text())
    assert manifest["inputs"]["scorer"] == "pickscore" and manifest["counts"]["pairs"] == 8

    ds = datasets.load_dataset("parquet", data_files=str(out / "pairs.parquet"), split="train")
    assert set(ds["label_0"]) <= {0, 0.5, 1}
    kept = ds.select([i for i, label_0 in enumerate(ds["label_0"]) if label_0 in (0, 1)])
    assert len(kept) == 8  # random twins: no ties
    for row in kept:
        images = [Image.open(io.BytesIO(row[c])).convert("RGB") for c in ("jpg_0", "jpg_1")]
        assert all(im.size == (64, 64) for im in images)
        key = row["key"].rsplit("-", 2)[0]
        s0 = stored[row["model_0"]][key]["scores"]["pickscore"]["score"]
        s1 = stored[row["model_1"]][key]["scores"]["pickscore"]["score"]
        assert (row["score_0"], row["score_1"]) == (s0, s1)
        winner = images if row["label_0"] == 1 else images[::-1]  # DPO: if label_0 == 0, flip
        assert winner[0].tobytes() == images[0 if s0 > s1 else 1].tobytes()
        assert row["caption"] == stored["cfg"][key]["prompt"]


def test_weighted_pairs_with_a_margin_load_the_diffusion_orpo_way(scored_runs, tmp_path):
    """The WebDataset read as diffusers' train_diffusion_orpo_sdxl_lora_wds.py reads it:
    decode("pil") and rename(original_prompt=..., jpg_0=..., jpg_1=..., label_0=..., label_1=...)."""
    import webdataset as wds

    from jobutil import records

    stored = {name: records(scored_runs / name) for name in ("cfg", "answer")}

    def total(run, key):
        s = stored[run][key]["scores"]
        return s["pickscore"]["score"] + 0.5 * s["aesthetic"]["score"]

    gaps = sorted(abs(total("cfg", k) - total("answer", k)) for k in stored["cfg"])
    margin = (gaps[3] + gaps[4]) / 2  # half the pairs fall under it
    out = tmp_path / "pairs"
    assert _run_pairs("--runs", scored_runs / "cfg", scored_runs / "answer", "--scorer", "pickscore=1,aesthetic=0.5",
                      "--min-margin", margin, "--out", out) == 0
    manifest = json.loads((out / "pairs_manifest.json").read_text())
    assert manifest["counts"]["pairs"] == 4 and manifest["counts"]["skipped_by_margin"] == 4
    assert manifest["inputs"]["scorer_settings"]["weights"] == {"pickscore": 1.0, "aesthetic": 0.5}

    tars = [str(p) for p in sorted(out.glob("pairs-*.tar"))]
    dataset = (wds.WebDataset(tars, shardshuffle=False).decode("pil")
               .rename(original_prompt="original_prompt.txt", jpg_0="jpg_0.jpg", jpg_1="jpg_1.jpg",
                       label_0="label_0.txt", label_1="label_1.txt"))
    samples = list(dataset)
    assert len(samples) == 4
    for sample in samples:
        key = sample["__key__"].rsplit("-", 2)[0]
        assert isinstance(sample["jpg_0"], Image.Image) and sample["jpg_1"].size == sample["jpg_0"].size
        assert sample["original_prompt"] == stored["cfg"][key]["prompt"]
        assert abs(total("cfg", key) - total("answer", key)) >= margin
        # the reader's own choice: label_0 arrives as a string; it swaps only when label_0 == 0 (or 0.5 by chance)
        assert sample["label_0"] in ("1", 1) and sample["label_0"] != 0
        chosen_run = sample["json"]["model_0"]  # decode("pil") parses the json member too
        assert chosen_run == max(("cfg", "answer"), key=lambda run: total(run, key))


def test_pairs_on_a_score_the_runs_did_not_store(scored_runs, tmp_path, capsys):
    assert _run_pairs("--runs", scored_runs / "cfg", scored_runs / "answer", "--scorer", "hps",
                      "--out", tmp_path / "p") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run cfg has no hps score for") and "scores: [..., hps]" in err
    assert _run_pairs("--runs", scored_runs / "cfg", scored_runs / "answer", "--scorer", "pickscore=x",
                      "--out", tmp_path / "p") == 2
    assert "the weight of pickscore must be a number" in capsys.readouterr().err


def test_a_tiny_sweeps_report_shows_several_scores(tmp_path):
    """Three points scored by clip, pickscore and hps: the summary has each score's mean and 95%
    interval, the paired comparison runs on a chosen score, and every score gets its plot."""
    import pandas as pd

    from dnp_batch import report
    from jobutil import FAST, PROMPTS, records, run_job

    points = []
    for name, (method, w) in {"cfg_w3": ("cfg", 3.0), "cfg_w7": ("cfg", 7.0), "answer_w7": ("answer", 7.0)}.items():
        assert run_job("--prompts", PROMPTS, "--config", FAST, "--method", method, "--set", f"guidance_scale={w}",
                       "--set", "steps=4", "--seeds", "2", "--set", "scores=[clip,pickscore,hps]",
                       "--set", "scorers.pickscore.model=tiny-pickscore", "--set", "scorers.hps.model=tiny-hps",
                       "--out", tmp_path / "points" / name) == 0
        points.append({"name": name, "overrides": {"method": method, "guidance_scale": w}, "dir": f"points/{name}"})
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "scored", "baseline": "cfg_w7", "points": points}))

    runs, baseline = report.load_runs(tmp_path)
    summary = report.summarize(runs)
    for score in ("clip", "pickscore", "hps"):
        assert {f"{score}_mean", f"{score}_ci_low", f"{score}_ci_high"} <= set(summary.columns)
        assert (summary[f"{score}_ci_low"] < summary[f"{score}_mean"]).all()
        assert (summary[f"{score}_mean"] < summary[f"{score}_ci_high"]).all()
    recs = records(tmp_path / "points" / "cfg_w3")
    by_hand = sum(r["scores"]["pickscore"]["score"] for r in recs.values()) / len(recs)
    assert summary.set_index("point").loc["cfg_w3", "pickscore_mean"] == pytest.approx(by_hand)

    on_pick = report.compare(runs, baseline, score="pickscore")
    on_clip = report.compare(runs, baseline)
    assert on_pick["n_pairs"].tolist() == [8, 8]
    assert not on_pick["mean_delta"].equals(on_clip["mean_delta"])  # another score, other deltas
    with pytest.raises(ValueError, match="no run stored the score 'aesthetic'; compare on one of: clip, hps, pickscore"):
        report.compare(runs, baseline, score="aesthetic")

    index = report.write_report(tmp_path, tmp_path / "report", score="hps")
    html = index.read_text()
    for plot in ("clip_vs_guidance.png", "pickscore_vs_guidance.png", "hps_vs_guidance.png"):
        assert (tmp_path / "report" / plot).is_file() and plot in html
    assert "pickscore_mean" in html and "Wins/losses/ties on the hps score" in html
    assert pd.read_csv(tmp_path / "summary.csv")["hps_mean"].notna().all()


def test_scorer_bench_prints_seconds_per_image_for_every_scorer():
    import subprocess
    import sys

    from jobutil import REPO

    proc = subprocess.run([sys.executable, "bench/scorers.py", "--images", "4", "--size", "32", "--repeats", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rates = {line.split()[1]: float(line.split()[2]) for line in proc.stdout.splitlines()
             if line.startswith("seconds_per_image ")}
    assert set(rates) == {"clip", "pickscore", "hps", "imagereward", "aesthetic", "judge"}
    assert all(rate > 0 for rate in rates.values())
