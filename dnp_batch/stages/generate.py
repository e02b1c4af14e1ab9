"""The generation stages: auto-DNP's DNS + caption phase, and the configured method."""

from __future__ import annotations

from typing import Callable

from .. import api, methods
from .base import local_placement
from .pipelines import ModelStage


class DnsCaptionStage(ModelStage):
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
            self.pipeline(cfg), [s.prompt for s in samples], [s.seed for s in samples],
            captioner=self.captioner(cfg), method=cfg.method, guidance_scale=cfg.guidance_scale,
            num_inference_steps=cfg.steps, height=cfg.height, width=cfg.width,
            dns_guidance_scale=cfg.dns_guidance_scale, guidance_rescale=cfg.guidance_rescale,
            batch_size=len(samples), norm_rescale=cfg.norm_rescale)
        for item, image, caption, nfe, seconds in zip(items, dns.images, dns.captions, dns.nfe, dns.seconds):
            item.update(dns_image=image, caption=caption, dns_nfe=nfe, dns_seconds=seconds, dns_placement=self.placement)


class GenerationStage(ModelStage):
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
