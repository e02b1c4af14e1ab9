"""The model cache of a stage process: each pipeline and captioner loaded once, shared by the stages
of the process that need it (a local auto-DNP run's two stages use one copy of the model)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import api, methods, plugins
from ..captioner import Captioner
from ..models import SCHEDULERS, library_versions, load_pipeline, model_digest, model_revision
from ..names import resolve_model
from .base import Stage

if TYPE_CHECKING:
    from ..config import JobConfig


@dataclass(eq=False)
class _Loaded:
    """A loaded pipeline, its own scheduler (a row may swap in another) and what records say of it."""

    pipe: Any
    scheduler: Any
    info: dict


# Pipelines loaded in this process, shared by its stages while any of them holds one: a local
# auto-DNP run's two stages (DNS + caption, then NP) use one copy of the model, not two. Under Ray
# each stage is its own actor process, so there each loads its own.
_LOADED: "weakref.WeakValueDictionary[tuple, _Loaded]" = weakref.WeakValueDictionary()


def _pipeline_key(cfg: JobConfig, device: str) -> tuple:
    return (cfg.model, cfg.dtype, cfg.vae, cfg.compile_unet, device)


def _load(cfg: JobConfig, device: str) -> _Loaded:
    source = resolve_model(cfg.model)
    pipe = load_pipeline(source, dtype=cfg.dtype, device=device, vae=cfg.vae, compile_unet=cfg.compile_unet)
    info = {"model": cfg.model, "model_revision": model_revision(source), "versions": library_versions()}
    if cfg.vae is not None:
        info["vae"] = cfg.vae
    if Path(source).is_dir():  # a local dir, toy-shapes or tiny-*: where it was, and exactly what
        info.update(model_path=str(Path(source).absolute()), model_digest=model_digest(source))
    return _Loaded(pipe, pipe.scheduler, info)


class ModelStage(Stage):
    """A stage that runs the diffusion pipeline (and, for the DNP methods, a captioner): it loads
    each distinct model it needs once, at start-up, so grid points that share a model share the
    loaded one."""

    def __init__(self, cfgs, where=None):
        super().__init__(cfgs, where)
        self._pipes: dict[tuple, _Loaded] = {}
        self._captioners: dict[str, Captioner] = {}

    def generate(self, cfg, samples, **kw) -> api.GenerateResult:
        """`cfg`'s method on `samples`, with every method setting of `cfg`."""
        method = methods.get(cfg.method)
        negatives = [s.negative_prompt for s in samples] if method.needs_negative else None
        return api.generate(
            self.pipeline(cfg), [s.prompt for s in samples], [s.seed for s in samples],
            method=getattr(cfg, method.section) if method.section else cfg.method,  # its name, or its settings
            negative_prompts=negatives, guidance_scale=cfg.guidance_scale, num_inference_steps=cfg.steps,
            height=cfg.height, width=cfg.width, dns_guidance_scale=cfg.dns_guidance_scale,
            guidance_rescale=cfg.guidance_rescale, ids=[s.key for s in samples], batch_size=len(samples),
            norm_rescale=cfg.norm_rescale, **kw)

    def pipeline(self, cfg: JobConfig):
        """The loaded pipeline for `cfg.model` (loaded on first use, or shared with another stage of
        this process that loaded it), with `cfg.scheduler` set."""
        key = _pipeline_key(cfg, self.device)
        if key not in self._pipes:
            loaded = _LOADED.get(key)
            if loaded is None:
                loaded = _LOADED[key] = _load(cfg, self.device)
            self._pipes[key] = loaded  # the strong reference: the model lives as long as a stage using it
        loaded = self._pipes[key]
        pipe = loaded.pipe
        pipe.scheduler = loaded.scheduler if cfg.scheduler is None else \
            SCHEDULERS[cfg.scheduler].from_config(loaded.scheduler.config)
        return pipe

    def model_info(self, cfg: JobConfig) -> dict:
        return self._pipes[_pipeline_key(cfg, self.device)].info

    def captioner(self, cfg: JobConfig) -> Captioner:
        c = cfg.captioner
        if (named := plugins.captioner(c.model)) is not None:  # a plug-in's (the toy world's exact judge)
            return plugins.load(named)()
        if c.model not in self._captioners:
            captioner = Captioner(resolve_model(c.model), dtype=cfg.dtype, device=self.device)
            captioner.model_id = c.model  # records name the model as configured, not its cache path
            self._captioners[c.model] = captioner
        captioner = self._captioners[c.model]
        captioner.max_new_tokens, captioner.prompt = c.max_new_tokens, c.prompt
        return captioner


