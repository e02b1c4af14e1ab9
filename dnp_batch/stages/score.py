"""The scoring stage: every configured score of each image (and DNS image), and the record fields a
scorer adds (the toy judge's verdicts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .. import scorers as score_registry
from ..config import JobConfig
from .base import Stage, local_placement

if TYPE_CHECKING:
    from .. import scorer_models


class ScoringStage(Stage):
    """Every configured score (`cfg.score_names()`, dnp_batch.scorers) of each image with its prompt,
    and of the DNS image where there is one, under the record's `scores` / `dns_scores` mappings
    ({name: {"score": x, "model": id}}); `clip_score` and `dns_clip_score` stay as before. A scorer
    with an `annotate` method also writes its own record fields (the toy world's judge: its
    per-attribute verdict `judge`, `dns_judge` and the image-quality proxy `quality`). Each scorer
    is loaded once per actor, at start-up."""

    name = "score"

    def __init__(self, cfgs: list[JobConfig], where: Callable[[], dict] = local_placement):
        super().__init__(cfgs, where)
        self._scorers: dict[tuple, scorer_models.Scorer] = {}
        for cfg in cfgs:
            for name in cfg.score_names():
                self.scorer(cfg, name)

    def applies(self, cfg):
        return bool(cfg.score_names())

    def scorer(self, cfg, name: str) -> scorer_models.Scorer:
        settings = cfg.scorer_settings(name)
        key = (name, settings, cfg.dtype)
        if key not in self._scorers:
            # clip keeps today's numbers: float32 whatever the job's dtype (ClipScore ignores dtype)
            self._scorers[key] = score_registry.load_scorer(name, settings, device=self.device, dtype=cfg.dtype)
        return self._scorers[key]

    def process(self, cfg, samples, items):
        for item in items:
            item["record"].setdefault("placement", {})["score"] = self.placement
        for name in cfg.score_names():  # a scorer's own record fields first (the toy judge's verdicts)
            scorer = self.scorer(cfg, name)
            if hasattr(scorer, "annotate"):
                for s, item in zip(samples, items):
                    item["record"].update(scorer.annotate(item["image"], s.prompt))
                    if item.get("dns_image") is not None:
                        item["record"].update(scorer.annotate(item["dns_image"], s.prompt, dns=True))
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
