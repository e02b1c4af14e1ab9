"""Stages: plain callable classes, one loaded model each, over one shard of samples at a time.

The same objects run in-process (the local distributor, tests) and as Ray Data actors (`dag.py`):
`Stage(cfgs)(row) -> row`, where a row is `{"shard": i, "payload": bytes}` and the payload holds
the shard's config, output URL, samples and their results so far. A shard is cut into the same batches
wherever it runs, so a sample's bytes do not depend on cluster shape or on resuming. A batch that
raises is retried sample by sample; a sample that still fails is marked failed (with its error)
and skipped by later stages, and the rest of the shard goes on.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import time
import traceback
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import api, methods
from .captioner import Captioner, check_captioner_source
from .config import JobConfig, StageResources
from .models import (JUDGE_CAPTIONER, SCHEDULERS, TINY_MODELS, TOY_MODEL, check_pipeline_source, library_versions,
                     load_pipeline, model_digest, model_revision, resolve_model)
from . import scorers as score_registry
from .prompts import PromptSet, Sample, Samples
from .scoring import check_clip_source
from .sink import ShardSink, encode_image
from .toyworld.data import parse_caption
from .toyworld.judge import JudgeCaptioner, judge, quality

def uses_judge(cfg: JobConfig) -> bool:
    return cfg.judged()


def judge_prompt(image, prompt: str) -> dict | None:
    """The toy judge's verdict per attribute (None where it does not apply), or None for a prompt
    outside the toy grammar."""
    if parse_caption(prompt) is None:
        return None
    return {k: None if v != v else v for k, v in judge(image, prompt).items()}  # NaN -> None (JSON)


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def local_placement() -> dict:
    """Where a stage runs when no distributor says: this host, and the GPUs CUDA_VISIBLE_DEVICES
    leaves visible to the process (none when unset or empty)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return {"node": socket.gethostname(), "pid": os.getpid(), "gpu_ids": [g for g in visible.split(",") if g.strip()]}


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
    check_pipeline_source(resolve_model(cfg.model) if cfg.model == TOY_MODEL else cfg.model)
    if cfg.vae is not None and Path(cfg.vae).expanduser().exists() and not (Path(cfg.vae).expanduser() /
                                                                           "config.json").is_file():
        raise ValueError(f"vae {cfg.vae} is not a diffusers AutoencoderKL directory (no config.json); give a hub "
                         "id (e.g. madebyollin/sdxl-vae-fp16-fix) or a VAE folder")
    if methods.get(cfg.method).needs_captioner and cfg.captioner.model not in (*TINY_MODELS, JUDGE_CAPTIONER):
        check_captioner_source(cfg.captioner.model)
    for name in cfg.score_names():
        if name == "clip":
            if cfg.clip.model not in TINY_MODELS:
                check_clip_source(cfg.clip.model, cfg.clip.pretrained)
        else:
            score_registry.check_settings(name, cfg.scorer_settings(name))


def pack(shard: int, cfg: JobConfig, out: str, samples: list[Sample], items: list[dict], timings: str = "{}") -> dict:
    """A shard row; `timings` (JSON) is each stage's busy seconds on it so far."""
    return {"shard": shard, "payload": pickle.dumps((cfg, out, samples, items)), "timings": timings}


def add_timing(row: dict, stage: str, seconds: float) -> str:
    """The row's timings with this stage's seconds added."""
    timings = json.loads(row.get("timings") or "{}")
    timings[stage] = timings.get(stage, 0.0) + seconds
    return json.dumps(timings)


def unpack(row: dict) -> tuple[int, JobConfig, str, list[Sample], list[dict]]:
    cfg, out, samples, items = pickle.loads(row["payload"])
    return int(row["shard"]), cfg, out, samples, items


def new_row(shard: int, cfg: JobConfig, out: str, samples: list[Sample]) -> dict:
    """A shard before any stage: its config and output, one item per sample to be filled in."""
    items = [{"key": s.key, "record": {"id": s.key, "prompt": s.prompt, "seed": s.seed}} for s in samples]
    return pack(shard, cfg, out, samples, items)


def _failure(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def run_isolated(batch_size: int, samples: list[Sample], items: list[dict],
                 fn: Callable[[list[Sample], list[dict]], None], method: str) -> None:
    """Apply `fn` to the pending samples in fixed batches; a failing batch is retried sample by
    sample, and a sample that fails alone gets its error recorded in its item."""
    pending = [j for j, item in enumerate(items) if not item.get("error")]
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        try:
            fn([samples[j] for j in chunk], [items[j] for j in chunk])
        except Exception:  # noqa: BLE001 - isolate the sample that fails, keep the rest of the shard
            for j in chunk:
                try:
                    fn([samples[j]], [items[j]])
                except Exception as err:  # noqa: BLE001
                    items[j]["error"] = _failure(err)
                    items[j]["record"].update(method=method, status="failed")


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


class _Stage:
    """Shared wiring. A stage serves the configs of every grid point of a job (one for a plain
    run); it loads each distinct model it needs once, at start-up, and every row brings its own
    config, so grid points that share a model share the loaded one."""

    def __init__(self, cfgs: list[JobConfig], where: Callable[[], dict] = local_placement):
        base = cfgs[0]
        self.device = resolve_device(base.device)
        # Which device and GPU ids this stage's samples come from, as the distributor placed it
        # (dag.ray_placement under Ray). A stage given a GPU by Ray where CUDA is not available
        # (a CPU-only machine, the fake-GPU test cluster) runs on the CPU through this same code.
        self.placement = {"device": self.device, **(where or local_placement)()}
        if self.device == "cpu":
            torch.set_num_threads(base.cpu_threads)
        self._pipes: dict[tuple, _Loaded] = {}
        self._captioners: dict[str, Captioner] = {}

    def applies(self, cfg: JobConfig) -> bool:
        return True

    name = "stage"  # in timings and logs

    def __call__(self, row: dict) -> dict:
        t0 = time.perf_counter()
        shard, cfg, out, samples, items = unpack(row)
        if self.applies(cfg):
            self.prepare(cfg)  # a config the models cannot run fails the job, not each sample
            run_isolated(cfg.batch_size, samples, items, lambda s, it: self.process(cfg, s, it), cfg.method)
        return pack(shard, cfg, out, samples, items, add_timing(row, self.name, time.perf_counter() - t0))

    def prepare(self, cfg: JobConfig) -> None:
        pass

    def process(self, cfg: JobConfig, samples: list[Sample], items: list[dict]) -> None:
        raise NotImplementedError

    def generate(self, cfg, samples, **kw) -> api.GenerateResult:
        """`cfg`'s method on `samples`, with every method setting of `cfg`."""
        method = methods.get(cfg.method)
        negatives = [s.negative_prompt for s in samples] if method.needs_negative else None
        return api.generate(
            self.pipeline(cfg), [s.prompt for s in samples], [s.seed for s in samples], cfg.method,
            negative_prompts=negatives, guidance_scale=cfg.guidance_scale, num_inference_steps=cfg.steps,
            height=cfg.height, width=cfg.width, dns_guidance_scale=cfg.dns_guidance_scale,
            guidance_rescale=cfg.guidance_rescale, ids=[s.key for s in samples], batch_size=len(samples),
            settings={section: getattr(cfg, section) for section in methods.sections()}, **kw)

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
        if c.model == JUDGE_CAPTIONER:
            return JudgeCaptioner()
        if c.model not in self._captioners:
            captioner = Captioner(resolve_model(c.model), dtype=cfg.dtype, device=self.device)
            captioner.model_id = c.model  # records name the model as configured, not its cache path
            self._captioners[c.model] = captioner
        captioner = self._captioners[c.model]
        captioner.max_new_tokens, captioner.prompt = c.max_new_tokens, c.prompt
        return captioner


class DnsCaptionStage(_Stage):
    """auto-DNP's phase one (§DNP steps 1-2): DNS chain, decode x⁻, caption it -> n*."""

    name = "dns_caption"

    def __init__(self, cfgs: list[JobConfig], where: Callable[[], dict] = local_placement):
        super().__init__(cfgs, where)
        for cfg in filter(self.applies, cfgs):
            self.prepare(cfg)

    def applies(self, cfg):
        return "dns_caption" in methods.get(cfg.method).stages

    def prepare(self, cfg):
        self.captioner(cfg)
        api.check_size(self.pipeline(cfg), cfg.height, cfg.width)

    def process(self, cfg, samples, items):
        dns = api.describe_dns(
            self.pipeline(cfg), [s.prompt for s in samples], [s.seed for s in samples], self.captioner(cfg),
            guidance_scale=cfg.guidance_scale, num_inference_steps=cfg.steps, height=cfg.height, width=cfg.width,
            dns_guidance_scale=cfg.dns_guidance_scale, guidance_rescale=cfg.guidance_rescale,
            batch_size=len(samples))
        for item, image, caption, nfe, seconds in zip(items, dns.images, dns.captions, dns.nfe, dns.seconds):
            item.update(dns_image=image, caption=caption, dns_nfe=nfe, dns_seconds=seconds, dns_placement=self.placement)


class GenerationStage(_Stage):
    """The configured method; for auto-DNP, phase two with the captions of `DnsCaptionStage`."""

    name = "generate"

    def __init__(self, cfgs: list[JobConfig], where: Callable[[], dict] = local_placement):
        super().__init__(cfgs, where)
        for cfg in cfgs:
            self.prepare(cfg)

    def prepare(self, cfg):
        if self.captions_here(cfg):
            self.captioner(cfg)
        api.check_size(self.pipeline(cfg), cfg.height, cfg.width)

    @staticmethod
    def captions_here(cfg) -> bool:
        """The method captions inside this stage (CNP), not in a stage of its own (auto-DNP)."""
        method = methods.get(cfg.method)
        return method.needs_captioner and "dns_caption" not in method.stages

    def process(self, cfg, samples, items):
        if "dns_caption" in methods.get(cfg.method).stages:  # phase two of a two-stage method
            c = cfg.captioner
            out = self.generate_finite(cfg, samples, captions=[item["caption"] for item in items],
                                       captioner={"model": c.model, "max_new_tokens": c.max_new_tokens,
                                                  "prompt": c.prompt})
            for item, s, image, rec in zip(items, samples, out.images, out.records):
                item["image"] = image
                item["record"] = {**rec, **self.model_info(cfg), "metadata": s.metadata, "status": "ok",
                                  "nfe": rec["nfe"] + item["dns_nfe"], "seconds": rec["seconds"] + item["dns_seconds"],
                                  "placement": {"dns_caption": item["dns_placement"], "generate": self.placement}}
            return
        out = self.generate_finite(cfg, samples, captioner=self.captioner(cfg) if self.captions_here(cfg) else None)
        dns_images = out.dns_images or [None] * len(samples)
        for item, s, image, dns, rec in zip(items, samples, out.images, dns_images, out.records):
            item.update(image=image, dns_image=dns)
            item["record"] = {**rec, **self.model_info(cfg), "metadata": s.metadata, "status": "ok",
                              "placement": {"generate": self.placement}}

    def generate_finite(self, cfg, samples, **kw) -> api.GenerateResult:
        """`generate`, never keeping a NaN/inf sample: such samples run again in float32 (once),
        and a sample still non-finite fails (run_isolated records why) instead of becoming black."""
        out = self.generate(cfg, samples, **kw)
        bad = [j for j, rec in enumerate(out.records) if rec.get("nonfinite")]
        if bad and cfg.dtype != "float32":
            precise = cfg.model_copy(update={"dtype": "float32"})
            again = self.generate(precise, [samples[j] for j in bad], **{
                k: [v[j] for j in bad] if k == "captions" else v for k, v in kw.items()})
            for n, j in enumerate(bad):
                out.images[j] = again.images[n]
                out.records[j] = {**again.records[n], "precision_retry": f"NaN/inf in {cfg.dtype}: made again in float32"}
                if out.dns_images and again.dns_images:
                    out.dns_images[j] = again.dns_images[n]
        still = [samples[j].key for j, rec in enumerate(out.records) if rec.get("nonfinite")]
        if still:
            tried = cfg.dtype if cfg.dtype == "float32" else f"{cfg.dtype} and again in float32"
            raise FloatingPointError(f"non-finite values (NaN/inf) in the latents or image of {', '.join(still)} "
                                     f"({tried}); not written")
        return out


class ScoringStage(_Stage):
    """Every configured score (`cfg.score_names()`, dnp_batch.scorers) of each image with its prompt,
    and of the DNS image where there is one, under the record's `scores` / `dns_scores` mappings
    ({name: {"score": x, "model": id}}); `clip_score` and `dns_clip_score` stay as before. In the
    toy world also the exact judge's per-attribute verdict (`judge`, `dns_judge`) and the image-
    quality proxy (`quality`). Each scorer is loaded once per actor, at start-up."""

    name = "score"

    def __init__(self, cfgs: list[JobConfig], where: Callable[[], dict] = local_placement):
        super().__init__(cfgs, where)
        self._scorers: dict[tuple, score_registry.Scorer] = {}
        for cfg in cfgs:
            for name in cfg.score_names():
                self.scorer(cfg, name)

    def applies(self, cfg):
        return bool(cfg.score_names())

    def scorer(self, cfg, name: str) -> score_registry.Scorer:
        settings = cfg.scorer_settings(name)
        key = (name, settings, cfg.dtype)
        if key not in self._scorers:
            # clip keeps today's numbers: float32 whatever the job's dtype (ClipScore ignores dtype)
            self._scorers[key] = score_registry.load_scorer(name, settings, device=self.device, dtype=cfg.dtype)
        return self._scorers[key]

    def process(self, cfg, samples, items):
        for item in items:
            item["record"].setdefault("placement", {})["score"] = self.placement
        if uses_judge(cfg):
            for s, item in zip(samples, items):
                item["record"]["judge"] = judge_prompt(item["image"], s.prompt)
                item["record"]["quality"] = {k: None if v != v else v for k, v in quality(item["image"]).items()}
                if item.get("dns_image") is not None:
                    item["record"]["dns_judge"] = judge_prompt(item["dns_image"], s.prompt)
        with_dns = [(s, item) for s, item in zip(samples, items) if item.get("dns_image") is not None]
        for name in cfg.score_names():
            scorer = self.scorer(cfg, name)
            scores = scorer.score([item["image"] for item in items], [s.prompt for s in samples])
            dns_scores = scorer.score([item["dns_image"] for _, item in with_dns], [s.prompt for s, _ in with_dns])
            for item, score in zip(items, scores):
                item["record"].setdefault("scores", {})[name] = {"score": score, "model": scorer.model_id}
                if name == "clip":
                    item["record"].update(clip_score=score, clip_model=cfg.clip.model,
                                          clip_pretrained=cfg.clip.pretrained)
            for (_, item), score in zip(with_dns, dns_scores):
                item["record"].setdefault("dns_scores", {})[name] = {"score": score, "model": scorer.model_id}
                if name == "clip":
                    item["record"]["dns_clip_score"] = score


class WriteStage:
    """Encode the images and write the shard (tar + its index) to the row's output; returns a summary."""

    def __init__(self, cfgs: list[JobConfig], where: Callable[[], dict] | None = None):
        self._sinks: dict[str, ShardSink] = {}

    name = "write"

    def __call__(self, row: dict) -> dict:
        t0 = time.perf_counter()
        shard, cfg, out, samples, items = unpack(row)
        fmt, quality = cfg.output.image_format, cfg.output.quality
        for item in items:
            if not item.get("error"):
                item["image"] = encode_image(item["image"], fmt, quality)
                if item.get("dns_image") is not None:
                    item["dns_image"] = encode_image(item["dns_image"], fmt, quality)
        sink = self._sinks.setdefault(out, ShardSink(out))
        sink.write_shard(shard, items, fmt)
        scores = [item["record"].get("clip_score") for item in items if not item.get("error")]
        return {"out": out, "shard": shard, "samples": len(items), "failed": sum(1 for i in items if i.get("error")),
                "clip_scores": [s for s in scores if s is not None],
                "timings": add_timing(row, self.name, time.perf_counter() - t0)}


@dataclass(frozen=True)
class StageSpec:
    name: str
    cls: type
    resources: StageResources


def build_stages(cfgs: list[JobConfig]) -> list[StageSpec]:
    """The DAG as a list: [dns_caption ->] generate [-> score] -> write; resources from the first config."""
    res = cfgs[0].stages
    specs = []
    if any("dns_caption" in methods.get(cfg.method).stages for cfg in cfgs):
        specs.append(StageSpec("dns_caption", DnsCaptionStage, res.dns_caption))
    specs.append(StageSpec("generate", GenerationStage, res.generate))
    if any(cfg.score_names() for cfg in cfgs):
        specs.append(StageSpec("score", ScoringStage, res.score))
    specs.append(StageSpec("write", WriteStage, res.write))
    return specs
