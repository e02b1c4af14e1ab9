"""Stages: plain callable classes, one loaded model each, over one shard of samples at a time.

The same objects run in-process (the local distributor, tests) and as Ray Data actors (`dag.py`):
`Stage(cfg, out)(row) -> row`, where a row is `{"shard": i, "payload": bytes}` and the payload
holds the shard's samples and their results so far. A shard is cut into the same batches
wherever it runs, so a sample's bytes do not depend on cluster shape or on resuming. A batch that
raises is retried sample by sample; a sample that still fails is marked failed (with its error)
and skipped by later stages, and the rest of the shard goes on.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass
from typing import Callable

import torch

from . import api, tiny
from .captioner import Captioner, check_captioner_source
from .config import JobConfig, StageResources
from .models import check_pipeline_source, library_versions, load_pipeline, model_revision
from .prompts import Sample
from .scoring import ClipScorer, check_clip_source
from .sink import ShardSink, encode_image

TINY_MODELS = {"tiny-sdxl": "sdxl", "tiny-sd": "sd", "tiny-blip2": "blip2", "tiny-clip": "clip"}


def resolve_model(name: str) -> str:
    """A hub id or local dir as given; `tiny-*` names are built on first use into the cache."""
    return str(tiny.ensure_tiny(TINY_MODELS[name])) if name in TINY_MODELS else name


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def check_samples(cfg: JobConfig, samples: list[Sample]) -> None:
    """Refuse, before anything runs, samples that the configured method cannot run."""
    if cfg.method in api.NEGATIVE_METHODS:
        missing = [s.key for s in samples if s.negative_prompt is None]
        if missing:
            hint = " (human DNP: pass the negatives file of phase one with --negatives)" if cfg.method == "dnp" else ""
            raise ValueError(
                f"method {cfg.method!r} needs a negative_prompt for every prompt; missing for "
                f"{len(missing)} sample(s), e.g. {missing[0]!r}{hint}"
            )


def check_sources(cfg: JobConfig) -> None:
    """Cheap checks of every model the stages will load (local dirs, CLIP names), before any work."""
    if cfg.model not in TINY_MODELS:
        check_pipeline_source(cfg.model)
    if cfg.method in api.CAPTIONED_METHODS and cfg.captioner.model not in TINY_MODELS:
        check_captioner_source(cfg.captioner.model)
    if cfg.clip.model and cfg.clip.model not in TINY_MODELS:
        check_clip_source(cfg.clip.model, cfg.clip.pretrained)


def pack(shard: int, samples: list[Sample], items: list[dict]) -> dict:
    return {"shard": shard, "payload": pickle.dumps((samples, items))}


def unpack(row: dict) -> tuple[int, list[Sample], list[dict]]:
    samples, items = pickle.loads(row["payload"])
    return int(row["shard"]), samples, items


def new_row(shard: int, samples: list[Sample]) -> dict:
    """A shard before any stage: one item per sample, to be filled in."""
    items = [{"key": s.key, "record": {"id": s.key, "prompt": s.prompt, "seed": s.seed}} for s in samples]
    return pack(shard, samples, items)


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


class _Stage:
    """Shared wiring: config, device, CPU threads, and the per-shard loop."""

    def __init__(self, cfg: JobConfig, out: str | None = None):
        self.cfg, self.out = cfg, out
        self.device = resolve_device(cfg.device)
        if self.device == "cpu":
            torch.set_num_threads(cfg.cpu_threads)

    def __call__(self, row: dict) -> dict:
        shard, samples, items = unpack(row)
        run_isolated(self.cfg.batch_size, samples, items, self.process, self.cfg.method)
        return pack(shard, samples, items)

    def process(self, samples: list[Sample], items: list[dict]) -> None:
        raise NotImplementedError

    def generate(self, pipe, samples, method, negatives=None, seeds=None, **kw) -> api.GenerateResult:
        cfg = self.cfg
        return api.generate(
            pipe, [s.prompt for s in samples], seeds or [s.seed for s in samples], method,
            negative_prompts=negatives, guidance_scale=cfg.guidance_scale, num_inference_steps=cfg.steps,
            height=cfg.height, width=cfg.width, answer=cfg.answer.to_api(),
            dns_guidance_scale=cfg.dns_guidance_scale, guidance_rescale=cfg.guidance_rescale,
            ids=[s.key for s in samples], batch_size=len(samples), **kw)

    def load_pipeline(self):
        cfg = self.cfg
        source = resolve_model(cfg.model)
        pipe = load_pipeline(source, dtype=cfg.dtype, device=self.device, scheduler=cfg.scheduler)
        api.check_size(pipe, cfg.height, cfg.width)  # a config error, not a per-sample failure
        self.model_info = {"model": cfg.model, "model_revision": model_revision(source),
                           "versions": library_versions()}
        return pipe

    def load_captioner(self) -> Captioner:
        c = self.cfg.captioner
        captioner = Captioner(resolve_model(c.model), dtype=self.cfg.dtype, device=self.device,
                              max_new_tokens=c.max_new_tokens, prompt=c.prompt)
        captioner.model_id = c.model  # records name the model as configured, not its cache path
        return captioner


class DnsCaptionStage(_Stage):
    """auto-DNP, first half (§DNP steps 1-2): DNS chain, decode x⁻, caption it -> n*."""

    def __init__(self, cfg: JobConfig, out: str | None = None):
        super().__init__(cfg, out)
        self.captioner = self.load_captioner()
        self.pipe = self.load_pipeline()

    def process(self, samples, items):
        dns = self.generate(self.pipe, samples, "dns")
        captions = [c.strip() for c in self.captioner.caption(dns.images)]
        for item, image, caption, rec in zip(items, dns.images, captions, dns.records):
            item.update(dns_image=image, caption=caption, dns_nfe=rec["nfe"], dns_seconds=rec["seconds"])


class GenerationStage(_Stage):
    """The configured method; for auto-DNP, the NP half with the captions of `DnsCaptionStage`."""

    def __init__(self, cfg: JobConfig, out: str | None = None):
        super().__init__(cfg, out)
        self.captioner = self.load_captioner() if cfg.method == "cnp" else None
        self.pipe = self.load_pipeline()

    def process(self, samples, items):
        cfg = self.cfg
        if cfg.method == "auto-dnp":
            self.process_auto_dnp(samples, items)
            return
        negatives = [s.negative_prompt for s in samples] if cfg.method in api.NEGATIVE_METHODS else None
        out = self.generate(self.pipe, samples, cfg.method, negatives, captioner=self.captioner,
                            cnp_every=cfg.cnp.every)
        dns_images = out.dns_images or [None] * len(samples)
        for item, s, image, dns, rec in zip(items, samples, out.images, dns_images, out.records):
            item.update(image=image, dns_image=dns)
            item["record"] = {**rec, **self.model_info, "metadata": s.metadata, "status": "ok"}

    def process_auto_dnp(self, samples, items):
        """§DNP step 3: NP with (p, n*) from the same z_T (or a fresh seed), recorded as auto-DNP."""
        cfg = self.cfg
        seeds = [s.seed if cfg.dnp.same_seed else api.fresh_seed(s.seed) for s in samples]
        out = self.generate(self.pipe, samples, "dnp", [item["caption"] for item in items], seeds=seeds)
        captioner = {"model": cfg.captioner.model, "max_new_tokens": cfg.captioner.max_new_tokens,
                     "prompt": cfg.captioner.prompt}
        for item, s, np_seed, image, rec in zip(items, samples, seeds, out.images, out.records):
            item["image"] = image
            item["record"] = {
                **rec, **self.model_info, "metadata": s.metadata, "status": "ok", "method": "auto-dnp",
                "seed": s.seed, "np_seed": np_seed, "same_seed": cfg.dnp.same_seed, "captions": 1,
                "captioner": captioner, "dns_guidance_scale": cfg.dns_guidance_scale or cfg.guidance_scale,
                "nfe": rec["nfe"] + item["dns_nfe"], "seconds": rec["seconds"] + item["dns_seconds"],
            }


class ScoringStage(_Stage):
    """CLIP score of each image with its prompt, and of the DNS image where there is one."""

    def __init__(self, cfg: JobConfig, out: str | None = None):
        super().__init__(cfg, out)
        c = cfg.clip
        self.scorer = ClipScorer(resolve_model(c.model), pretrained=c.pretrained, device=self.device,
                                 batch_size=c.batch_size)

    def process(self, samples, items):
        scores = self.scorer.score([item["image"] for item in items], [s.prompt for s in samples])
        with_dns = [(s, item) for s, item in zip(samples, items) if item.get("dns_image") is not None]
        dns_scores = self.scorer.score([item["dns_image"] for _, item in with_dns], [s.prompt for s, _ in with_dns])
        for item, score in zip(items, scores):
            item["record"].update(clip_score=score, clip_model=self.cfg.clip.model,
                                  clip_pretrained=self.cfg.clip.pretrained)
        for (_, item), score in zip(with_dns, dns_scores):
            item["record"]["dns_clip_score"] = score


class WriteStage(_Stage):
    """Encode the images and write the shard (tar + its index) through the sink; returns a summary."""

    def __init__(self, cfg: JobConfig, out: str | None = None):
        super().__init__(cfg, out)
        self.sink = ShardSink(out)

    def __call__(self, row: dict) -> dict:
        shard, samples, items = unpack(row)
        fmt, quality = self.cfg.output.image_format, self.cfg.output.quality
        for item in items:
            if not item.get("error"):
                item["image"] = encode_image(item["image"], fmt, quality)
                if item.get("dns_image") is not None:
                    item["dns_image"] = encode_image(item["dns_image"], fmt, quality)
        self.sink.write_shard(shard, items, fmt)
        failed = [item["key"] for item in items if item.get("error")]
        scores = [item["record"].get("clip_score") for item in items if not item.get("error")]
        return {"shard": shard, "samples": len(items), "failed": len(failed),
                "clip_scores": [s for s in scores if s is not None]}


@dataclass(frozen=True)
class StageSpec:
    name: str
    cls: type
    resources: StageResources


def build_stages(cfg: JobConfig) -> list[StageSpec]:
    """The DAG as a list: [dns_caption ->] generate [-> score] -> write."""
    res = cfg.stages
    specs = []
    if cfg.method == "auto-dnp":
        specs.append(StageSpec("dns_caption", DnsCaptionStage, res.dns_caption))
    specs.append(StageSpec("generate", GenerationStage, res.generate))
    if cfg.clip.model:
        specs.append(StageSpec("score", ScoringStage, res.score))
    specs.append(StageSpec("write", WriteStage, res.write))
    return specs


