import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dnp_batch.scoring import CONFIG_NAME, WEIGHTS_NAME, ClipScorer
from dnp_batch.tiny import build_tiny_clip

# With the tiny random weights the text mostly sets the sign: the first and last give cos > 0,
# the middle ones cos < 0; "x" * 500 is truncated to 77 tokens.
TEXTS = ["q w e r t y u i o p", "a red cube", "", "x" * 500, "p o i u y t r e w q"]


def _files(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def _images(n=5):
    """Random pictures of mixed sizes and modes (RGB, L, RGBA), so preprocessing resizes and converts."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        pixels = rng.integers(0, 256, (40 + 8 * i, 56 - 4 * i, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        images.append(image.convert(["RGB", "L", "RGBA"][i % 3]))
    return images


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-clip")
    build_tiny_clip(out)
    return out


@pytest.fixture(scope="module")
def scorer(tiny_clip_dir):
    return ClipScorer(tiny_clip_dir)


@pytest.fixture(scope="module")
def by_hand(tiny_clip_dir):
    """Raw cosines image_i·text_j computed with open_clip directly, not through ClipScorer."""
    source = f"local-dir:{tiny_clip_dir}"
    model, _, preprocess = open_clip.create_model_and_transforms(source)
    tokenizer = open_clip.get_tokenizer(source)
    model.eval()
    with torch.no_grad():
        image_emb = model.encode_image(torch.stack([preprocess(image) for image in _images()]))
        text_emb = model.encode_text(tokenizer(TEXTS))
    return F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T


def test_build_is_byte_identical_and_keeps_rng(tiny_clip_dir, tmp_path):
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_clip(tmp_path)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG state is left alone

    a, b = _files(tiny_clip_dir), _files(tmp_path)
    assert sorted(a) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    assert a == b


def test_loads_from_dir_and_local_dir_schema(tiny_clip_dir, scorer):
    assert scorer.model_name == str(tiny_clip_dir)
    assert scorer.pretrained is None
    again = ClipScorer(f"local-dir:{tiny_clip_dir}", pretrained="ignored")
    assert (again.model_name, again.pretrained) == (str(tiny_clip_dir), None)
    assert scorer.embed_images(_images(1)).shape == (1, 32)
    assert scorer.embed_texts(["a"]).shape == (1, 32)


def test_score_matches_open_clip_by_hand(scorer, by_hand):
    expected = [max(100 * by_hand[i, i].item(), 0.0) for i in range(len(TEXTS))]
    assert sum(by_hand[i, i] > 0 for i in range(len(TEXTS))) >= 2  # not all clipped to 0
    assert scorer.score(_images(), TEXTS) == pytest.approx(expected, abs=1e-5)


def test_scores_are_clipped_at_zero(scorer, by_hand):
    images, cos = _images(), by_hand
    pairs = [(i, j) for i in range(len(images)) for j in range(len(TEXTS))]
    scores = scorer.score([images[i] for i, _ in pairs], [TEXTS[j] for _, j in pairs])
    assert any(cos[i, j] > 0 for i, j in pairs)  # negative cosines: test_opposite_and_equal_embeddings...
    for (i, j), score in zip(pairs, scores):
        if cos[i, j] < 0:
            assert score == 0.0
        else:
            assert score == pytest.approx(100 * cos[i, j].item(), rel=1e-6, abs=1e-5)


def test_opposite_and_equal_embeddings_score_0_and_100(tiny_clip_dir, monkeypatch):
    scorer = ClipScorer(tiny_clip_dir)
    images = _images(3)
    image_emb = scorer.embed_images(images)
    monkeypatch.setattr(scorer, "embed_texts", lambda texts: -image_emb[: len(texts)])
    assert scorer.score(images, ["x"] * 3) == [0.0, 0.0, 0.0]
    monkeypatch.setattr(scorer, "embed_texts", lambda texts: 2 * image_emb[: len(texts)])
    assert scorer.score(images, ["x"] * 3) == pytest.approx([100.0] * 3, abs=1e-4)


def test_batching_matches_one_by_one(tiny_clip_dir, scorer):
    batched = ClipScorer(tiny_clip_dir, batch_size=2)
    images = _images()
    one_by_one = [scorer.score([image], [text])[0] for image, text in zip(images, TEXTS)]
    assert batched.score(images, TEXTS) == pytest.approx(one_by_one, abs=1e-5)
    assert scorer.score([], []) == []


def test_bfloat16_scores_close_to_float32(tiny_clip_dir, scorer):
    bf16 = ClipScorer(tiny_clip_dir, dtype="bf16")
    assert bf16.embed_images(_images(1)).dtype == torch.bfloat16
    scores = bf16.score(_images(), TEXTS)
    assert all(math.isfinite(s) and s >= 0 for s in scores)
    assert scores == pytest.approx(scorer.score(_images(), TEXTS), abs=2.0)


def test_bad_inputs_raise_value_errors(scorer):
    images = _images(2)
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        scorer.score(images, ["only one"])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        scorer.score([images[0], np.zeros((8, 8, 3))], ["a", "b"])
    with pytest.raises(ValueError, match=r"texts\[0\]"):
        scorer.score(images[:1], [None])


def test_bad_sources_raise_value_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="ViT-Nope-99.*list_models"):
        ClipScorer("ViT-Nope-99")
    with pytest.raises(ValueError, match=f"{tmp_path}.*{CONFIG_NAME}"):
        ClipScorer(tmp_path)
    with pytest.raises(ValueError, match="not-a-tag.*ViT-B-32"):
        ClipScorer("ViT-B-32", pretrained="not-a-tag")

    def offline(*args, **kwargs):
        raise RuntimeError("no network here")

    # A known tag whose download fails: wrapped with model, tag and the original message.
    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(ValueError, match="'ViT-B-32'.*'openai'.*no network here"):
        ClipScorer("ViT-B-32", pretrained="openai")
