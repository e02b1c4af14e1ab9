import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnp_batch.captioner import DEFAULT_CAPTIONER, Captioner, load_image
from dnp_batch.tiny import build_tiny_blip2

PROMPT = "Question: what is in the picture? Answer:"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _random_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Noise in a random tint and size per image (plain noise all looks alike to a random model)."""
    rng = np.random.default_rng(seed)
    sizes = [(40, 48), (32, 32), (64, 24), (50, 50)]
    pixels = [rng.random((1, 1, 3)) * rng.integers(0, 256, (*sizes[i % 4], 1)) for i in range(n)]
    return [Image.fromarray(p.astype(np.uint8)) for p in pixels]


@pytest.fixture(scope="module")
def tiny_blip2_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-blip2")
    build_tiny_blip2(out)
    return out


@pytest.fixture(scope="module")
def captioner(tiny_blip2_dir):
    """Short captions keep the module fast; the default length is exercised once below."""
    return Captioner(tiny_blip2_dir, max_new_tokens=8)


@pytest.fixture(scope="module")
def images():
    return _random_images(3)


def test_default_is_blip2_opt():
    assert DEFAULT_CAPTIONER == "Salesforce/blip2-opt-2.7b"


def test_build_is_byte_identical_and_leaves_rng_alone(tiny_blip2_dir, tmp_path):
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_blip2(tmp_path)
    assert torch.equal(torch.rand(3), expected_draw)

    a, b = _files(tiny_blip2_dir), _files(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= a.keys()
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == []
    config = json.loads(a["config.json"])
    assert config["model_type"] == "blip-2" and config["num_query_tokens"] == 4
    assert "local_files_only" not in json.loads(a["tokenizer_config.json"])


def test_captions_batch_of_three_with_defaults(tiny_blip2_dir, images):
    captioner = Captioner(tiny_blip2_dir)
    assert captioner.model_id == tiny_blip2_dir
    assert (captioner.max_new_tokens, captioner.prompt) == (30, None)
    tok = captioner.processor.tokenizer
    assert captioner.model.config.image_token_index == tok.convert_tokens_to_ids("<image>")

    captions = captioner.caption(images)
    assert len(captions) == 3
    assert all(isinstance(c, str) and c == c.strip() for c in captions)
    assert len(set(captions)) > 1 and any(captions)  # the tiny model does say something
    assert all(c.isascii() and "\ufffd" not in c for c in captions)


def test_deterministic_and_batch_equals_one_by_one(captioner, images):
    batch = captioner.caption(images)
    assert captioner.caption(images) == batch
    assert [captioner.caption([img])[0] for img in images] == batch
    assert captioner.caption([]) == []


def test_converts_non_rgb_images(captioner, images):
    gray = images[0].convert("L")
    assert captioner.caption([gray]) == captioner.caption([gray.convert("RGB")])
    rgba = images[1].convert("RGBA")
    assert captioner.caption([rgba]) == captioner.caption([images[1]])


def test_prompt_is_not_echoed(tiny_blip2_dir, images):
    prompted = Captioner(tiny_blip2_dir, prompt=PROMPT)
    assert prompted.prompt == PROMPT
    captions = prompted.caption(images)
    assert len(captions) == 3
    assert all("Question" not in c and "picture" not in c for c in captions)

    # Reference: the same call by hand, decoding only what follows the prompt's ids.
    inputs = prompted.processor(images=images, text=[PROMPT] * 3, return_tensors="pt")
    with torch.no_grad():
        out = prompted.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=30)
    new = out[:, inputs["input_ids"].shape[1] :]
    expected = [c.strip() for c in prompted.processor.batch_decode(new, skip_special_tokens=True)]
    assert captions == expected


def test_max_new_tokens_bounds_generation(tiny_blip2_dir, captioner, images, monkeypatch):
    short = Captioner(tiny_blip2_dir, max_new_tokens=2)
    generate = short.model.generate
    lengths = []

    def spy(**kwargs):
        out = generate(**kwargs)
        lengths.append(out.shape[1] - (4 + 1))  # 4 query tokens + BOS precede the caption
        return out

    monkeypatch.setattr(short.model, "generate", spy)
    captions = short.caption(images)
    assert lengths and max(lengths) <= 2
    tok = short.processor.tokenizer
    assert all(len(tok(c, add_special_tokens=False).input_ids) <= 2 for c in captions)
    # Greedy: the short captions are prefixes of the long ones.
    assert all(long.startswith(c) for c, long in zip(captions, captioner.caption(images)))


def test_bfloat16(tiny_blip2_dir, images):
    bf16 = Captioner(tiny_blip2_dir, dtype="bf16")
    assert bf16.model.language_model.dtype == torch.bfloat16
    captions = bf16.caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c == c.strip() for c in captions)


def test_rejects_dirs_that_are_not_blip2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{re.escape(str(empty))}.*config.json"):
        Captioner(empty)
    other = tmp_path / "clip"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match=f"{re.escape(str(other))}.*'clip'.*blip-2"):
        Captioner(other)


def test_unloadable_hub_id_names_the_id():
    with pytest.raises(ValueError, match="no-such-org/no-such-blip2"):
        Captioner("no-such-org/no-such-blip2")


def test_rejects_bad_arguments(tiny_blip2_dir, captioner, images):
    with pytest.raises(ValueError, match=r"images\[1\]"):
        captioner.caption([images[0], "not an image.png"])
    with pytest.raises(ValueError, match="list of PIL images"):
        captioner.caption(images[0])
    with pytest.raises(ValueError, match="max_new_tokens"):
        Captioner(tiny_blip2_dir, max_new_tokens=0)
    with pytest.raises(ValueError, match="dtype"):
        Captioner(tiny_blip2_dir, dtype="float8")


def test_load_image(tmp_path, images):
    good = tmp_path / "good.png"
    images[0].convert("L").save(good)
    loaded = load_image(good)
    assert loaded.mode == "RGB" and loaded.size == images[0].size

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ValueError, match=f"cannot read image {re.escape(str(corrupt))}"):
        load_image(corrupt)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match=f"cannot read image {re.escape(str(truncated))}"):
        load_image(truncated)
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ValueError, match=f"cannot read image {re.escape(str(missing))}"):
        load_image(missing)
