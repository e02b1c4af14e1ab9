"""CLIP score of (image, prompt) pairs with open_clip, from a model name + tag or a local directory.

The score follows torchmetrics' CLIPScore: `max(100 * cos(image_emb, text_emb), 0)`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from .runtime import resolve_dtype

DEFAULT_CLIP_MODEL = "ViT-H-14"
DEFAULT_CLIP_PRETRAINED = "laion2b_s32b_b79k"

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
LOCAL_DIR_PREFIX = "local-dir:"
HF_HUB_PREFIX = "hf-hub:"

# open_clip's `precision` names; "fp16"/"bf16" keep LayerNorm in float32, as open_clip recommends.
PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _check_local_dir(path: Path) -> Path:
    path = path.expanduser().absolute()
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory")
    if not (path / CONFIG_NAME).is_file():
        raise ValueError(
            f"{path} is not an open_clip model directory (no {CONFIG_NAME}); "
            "build a tiny one with `python -m dnp_batch.tiny --kind clip --out DIR`"
        )
    return path


def _resolve_source(model: str | os.PathLike, pretrained: str | None) -> tuple[str, str, str | None]:
    """(open_clip model id, name to record, pretrained to record) for a name, directory or schema string."""
    text = os.fspath(model)
    if text.startswith(LOCAL_DIR_PREFIX):
        path = _check_local_dir(Path(text[len(LOCAL_DIR_PREFIX) :]))
        return f"{LOCAL_DIR_PREFIX}{path}", str(path), None
    if text.startswith(HF_HUB_PREFIX):
        return text, text, None
    if Path(text).expanduser().exists():
        path = _check_local_dir(Path(text))
        return f"{LOCAL_DIR_PREFIX}{path}", str(path), None
    name = text.replace("/", "-")  # open_clip's own clean-up of built-in names
    if open_clip.get_model_config(name) is None:
        raise ValueError(
            f"unknown open_clip model {text!r} (and no such directory); see open_clip.list_models()"
        )
    if pretrained:
        if not open_clip.get_pretrained_cfg(name, pretrained) and not os.path.isfile(pretrained):
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise ValueError(
                f"pretrained {pretrained!r} is neither a known tag for open_clip model {text!r} "
                f"nor a file; known tags: {tags}"
            )
    return text, text, pretrained or None


def check_clip_source(model: str | os.PathLike, pretrained: str | None = None) -> None:
    """Cheap check before any load: a known open_clip name and tag, or an open_clip model dir."""
    _resolve_source(model, pretrained)


def _check_images(images: Sequence[Image.Image]) -> None:
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"images[{i}] is a {type(image).__name__}, not a PIL image")


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is a {type(text).__name__}, not a str")


class ClipScorer:
    """Scores (image, text) pairs with one loaded open_clip model; `score` is the public entry point."""

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_CLIP_MODEL,
        pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 32,
    ):
        """Load `model`: an open_clip name (weights from `pretrained`, a tag or file), a local
        directory with open_clip_config.json, or an "hf-hub:"/"local-dir:" id (`pretrained` ignored).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.batch_size = batch_size
        source, self.model_name, self.pretrained = _resolve_source(model, pretrained)
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                source, self.pretrained, precision=PRECISIONS[self.dtype], device=self.device
            )
            self.tokenizer = open_clip.get_tokenizer(source)
        except Exception as err:  # download/hub/checkpoint errors come in many types; name the source once
            raise ValueError(
                f"could not load open_clip model {self.model_name!r} "
                f"with pretrained {self.pretrained!r}: {err}"
            ) from err
        self.model.eval()

    def _empty_embedding(self) -> torch.Tensor:
        dim = getattr(self.model.visual, "output_dim", 0)
        return torch.empty((0, dim), dtype=self.dtype, device=self.device)

    def _batches(self, items: Sequence) -> list[Sequence]:
        return [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Raw (unnormalized) image embeddings, shape (N, D), in the model's dtype on its device."""
        _check_images(images)
        if not images:
            return self._empty_embedding()
        outputs = []
        with torch.no_grad():
            for batch in self._batches(images):
                pixels = torch.stack([self.preprocess(image) for image in batch])
                outputs.append(self.model.encode_image(pixels.to(self.device, self.dtype)))
        return torch.cat(outputs)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw (unnormalized) text embeddings, shape (N, D), in the model's dtype on its device."""
        _check_texts(texts)
        if not texts:
            return self._empty_embedding()
        outputs = []
        with torch.no_grad():
            for batch in self._batches(texts):
                tokens = self.tokenizer(list(batch)).to(self.device)
                outputs.append(self.model.encode_text(tokens))
        return torch.cat(outputs)

    def score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """CLIP score per (image, text) pair: max(100 * cos, 0), as torchmetrics' CLIPScore."""
        _check_images(images)  # up front, so an error names the index in the whole list
        _check_texts(texts)
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts; they must pair up")
        scores: list[float] = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            image_emb = F.normalize(self.embed_images(images[start:stop]).float(), dim=-1)
            text_emb = F.normalize(self.embed_texts(texts[start:stop]).float(), dim=-1)
            cos = (image_emb * text_emb).sum(dim=-1)
            scores.extend((100 * cos).clamp(min=0).tolist())
        return scores
