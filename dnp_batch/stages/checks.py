"""Checks before any work: samples the method cannot run, model sources that cannot load."""

from __future__ import annotations

from pathlib import Path

from .. import methods, plugins
from .. import scorers as score_registry
from ..captioner import check_captioner_source
from ..config import JobConfig
from ..models import check_pipeline_source
from ..names import TINY_MODELS, resolve_model
from ..prompts import PromptSet, Samples
from ..scoring import check_clip_source


def check_samples(cfg: JobConfig, samples: "Samples | PromptSet") -> None:
    """Refuse, before anything runs, samples that the configured method cannot run."""
    method = methods.get(cfg.method)
    if method.needs_negative:
        missing, first = samples.missing_negatives()
        if missing:
            hint = " (human DNP: pass the negatives file of phase one with --negatives)" \
                if method.reads_negatives_file else ""
            raise ValueError(
                f"method {cfg.method!r} needs a negative_prompt for every prompt; missing for "
                f"{missing} sample(s), e.g. {first!r}{hint}"
            )


def check_sources(cfg: JobConfig) -> None:
    """Cheap checks of every model the stages will load (local dirs, CLIP names), before any work."""
    check_pipeline_source(resolve_model(cfg.model) if plugins.model(cfg.model) else cfg.model)
    if cfg.vae is not None and Path(cfg.vae).expanduser().exists() and not (Path(cfg.vae).expanduser() /
                                                                           "config.json").is_file():
        raise ValueError(f"vae {cfg.vae} is not a diffusers AutoencoderKL directory (no config.json); give a hub "
                         "id (e.g. madebyollin/sdxl-vae-fp16-fix) or a VAE folder")
    named_captioner = cfg.captioner.model in TINY_MODELS or plugins.captioner(cfg.captioner.model)
    if methods.get(cfg.method).needs_captioner and not named_captioner:
        check_captioner_source(cfg.captioner.model)
    for name in cfg.score_names():
        if name == "clip":
            if cfg.clip.model not in TINY_MODELS:
                check_clip_source(cfg.clip.model, cfg.clip.pretrained)
        else:
            score_registry.check_settings(name, cfg.scorer_settings(name))
