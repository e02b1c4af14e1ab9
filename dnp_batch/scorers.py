"""The scorer registry: one home per image-text score, each loaded once and applied in batches.

    scorer = load_scorer("pickscore", {"model": "tiny-pickscore"}, device="cpu", dtype="float32")
    scorer.score(images, prompts)  # one float per (image, prompt), higher is better (None: not judged)

| name          | weights (default)                                          | what it measures                       |
| clip          | open_clip ViT-H-14 laion2b_s32b_b79k (`clip:` section)     | image-text agreement, 100·cos clipped  |
| pickscore     | yuvalkirstain/PickScore_v1 + CLIP-ViT-H-14 processor       | human preference (Pick-a-Pic)          |
| hps           | xswu/HPSv2 HPS_v2.1_compressed.pt on open_clip ViT-H-14    | human preference (HPDv2), a cosine     |
| imagereward   | THUDM/ImageReward ImageReward.pt (BLIP ViT-L + BERT + MLP) | human preference (ImageRewardDB)       |
| aesthetic     | LAION improved aesthetic MLP on openai/clip-vit-large-patch14 | aesthetics 1-10, prompt ignored     |
| judge         | the toy world's exact judge (no weights)                   | all attributes right (1/0), toy prompts |

Every scorer loads from a hub id or a local directory through one code path (the tiny random
twins of `python -m dnp_batch.tiny --kind pickscore|hps|imagereward|aesthetic` are local dirs laid
out like the published repos), in the stage's device and dtype. Weights are read as safetensors
where the repo has them, else with `torch.load(weights_only=True)`; no remote code is ever run.

ImageReward: the `image-reward` package does not import with transformers 5 (its BLIP code imports
helpers transformers removed), so its published checkpoint is loaded into transformers' BLIP
classes (`BlipVisionModel` for BLIP's ViT, `BlipTextModel` with cross-attention for its BERT
"med" text encoder) by renaming the keys (`imagereward_key`), plus its MLP head.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import Field

from . import plugins
from .names import TINY_MODELS, resolve_model
from .settings import Strict

# ---- settings (the job config's `scorers:` section is built from these) ----


class _Settings(Strict):
    batch_size: int = Field(16, ge=1)


class PickScoreSettings(_Settings):
    model: str = "yuvalkirstain/PickScore_v1"  # hub id, local dir (CLIPModel), or tiny-pickscore
    processor: str | None = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # None or a local model dir: the model's own


class HpsSettings(_Settings):
    model: str = "xswu/HPSv2"  # hub repo or local dir holding the checkpoint, or tiny-hps
    checkpoint: str = "HPS_v2.1_compressed.pt"
    arch: str = "ViT-H-14"  # open_clip model name; a local dir with open_clip_config.json uses that config


class ImageRewardSettings(_Settings):
    model: str = "THUDM/ImageReward"  # hub repo or local dir with ImageReward.pt + med_config.json
    checkpoint: str = "ImageReward.pt"
    tokenizer: str = "google-bert/bert-base-uncased"  # a local model dir with tokenizer files uses its own


class AestheticSettings(_Settings):
    model: str = "trl-lib/ddpo-aesthetic-predictor"  # hub repo or local dir holding the MLP, or tiny-aesthetic
    checkpoint: str = "aesthetic-model.pth"  # = christophschuhmann's sac+logos+ava1-l14-linearMSE.pth
    clip: str = "openai/clip-vit-large-patch14"  # a local model dir with a CLIP config uses its own


SETTINGS: dict[str, type[_Settings]] = {
    "pickscore": PickScoreSettings, "hps": HpsSettings, "imagereward": ImageRewardSettings,
    "aesthetic": AestheticSettings,
}

# ---- locations, checked before any load ----


def source(name: str) -> str:
    """A `tiny-*` name resolved to its built dir; anything else as given."""
    return resolve_model(name) if name in TINY_MODELS else name


def is_local(text: str) -> bool:
    return Path(text).expanduser().exists()


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_location(scorer: str, what: str, text: str, needs: Sequence[str] = ()) -> None:
    """Cheap check before any load: an existing local dir holding `needs`, or a hub id `org/name`."""
    if text in TINY_MODELS:
        return
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"scorer {scorer}: {what} {text} is not a directory")
        missing = [n for n in needs if not (path / n).exists()]
        if missing:
            raise ValueError(f"scorer {scorer}: {what} {text} holds no {missing[0]}; give the published "
                             f"weights' hub id or a dir laid out like them (`python -m dnp_batch.tiny` builds one)")
        return
    if not _HUB_ID.match(text):
        raise ValueError(f"scorer {scorer}: {what} {text!r} is neither a local directory nor a hub id (org/name)")


# ---- the registry ----


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer: its name, its class as "module:Class" (imported on load, so this table and the
    settings above are read without torch), what it measures, what a local dir must hold."""

    name: str
    cls: str
    measures: str
    needs: tuple[str, ...] = ()  # files a local model dir must hold
    settings: type | None = None


_CORE = [
    ScorerSpec("clip", "dnp_batch.scorer_models:ClipScore",
               "image-text agreement: torchmetrics' CLIP score, max(100·cos, 0)"),
    ScorerSpec("pickscore", "dnp_batch.scorer_models:PickScore",
               "human preference (Pick-a-Pic): logit_scale·cos of PickScore's CLIP-H", ("config.json",),
               PickScoreSettings),
    ScorerSpec("hps", "dnp_batch.scorer_models:HpsScore", "human preference (HPDv2): cos of HPS v2.1's CLIP-H", (),
               HpsSettings),
    ScorerSpec("imagereward", "dnp_batch.scorer_models:ImageRewardScore",
               "human preference (ImageRewardDB), standardised", ("med_config.json",), ImageRewardSettings),
    ScorerSpec("aesthetic", "dnp_batch.scorer_models:AestheticScore",
               "LAION aesthetics, about 1-10; the prompt is not used", (), AestheticSettings),
]


@cache
def registry() -> dict[str, ScorerSpec]:
    """{name: spec} of every scorer: the core's above, then the plug-ins' (the toy world's `judge`)."""
    return {s.name: s for s in [*_CORE, *plugins.scorer_specs()]}


def names() -> tuple[str, ...]:
    return tuple(registry())


def get(name: str) -> ScorerSpec:
    if name not in registry():
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(names())}")
    return registry()[name]


def check_settings(name: str, settings) -> None:
    """Cheap checks, before any load: each location a local dir laid out like the published weights,
    a `tiny-*` name, or a hub id."""
    spec = get(name)
    if spec.settings is None:
        return
    checkpoint = getattr(settings, "checkpoint", None)
    check_location(name, "model", settings.model, spec.needs + ((checkpoint,) if checkpoint else ()))
    for field in ("processor", "tokenizer", "clip"):
        value = getattr(settings, field, None)
        if value is not None:
            check_location(name, field, value)


def load_scorer(name: str, settings=None, device: str = "cpu", dtype="float32", clip=None):
    """Load scorer `name` (a `scorer_models.Scorer`) with its settings (a settings model or dict; for
    `clip` the job's ClipSettings); a load failure is one ValueError naming the scorer and its weights."""
    from .runtime import resolve_dtype

    spec = get(name)
    dtype = resolve_dtype(dtype)
    cls = plugins.load(spec.cls)
    if name == "clip":
        c = clip or settings
        return cls(c.model, c.pretrained, device=device, dtype=dtype, batch_size=c.batch_size)
    if spec.settings is None:
        return cls()
    if settings is None or isinstance(settings, dict):
        settings = spec.settings(**(settings or {}))
    check_settings(name, settings)
    try:
        scorer = cls(settings, device=device, dtype=dtype)
    except Exception as err:  # hub, file and state-dict errors come in many types: name the weights once
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"scorer {name}: could not load {settings.model!r}: {first}") from err
    scorer.name = name
    return scorer

