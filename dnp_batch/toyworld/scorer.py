"""The exact judge as a scorer (`judge` in a job's `scores`): 1.0 when every attribute of the prompt is
right, else 0.0, None for a prompt outside the toy grammar; it also writes its per-attribute verdict
(`judge`, `dns_judge`) and the image-quality proxy (`quality`) into each record."""

from __future__ import annotations

from ..scorer_models import Scorer, check_pairs
from .data import parse_caption
from .judge import JudgeCaptioner, judge, quality


def _json(verdict: dict) -> dict:
    return {k: None if v != v else v for k, v in verdict.items()}  # NaN -> None (JSON)


class JudgeScore(Scorer):
    name = "judge"
    batch_size = 64

    def __init__(self, *_, **__):
        self.model_id = JudgeCaptioner.model_id

    def score(self, images, prompts):
        check_pairs(images, prompts)
        verdicts = [None if parse_caption(p) is None else judge(im, p)["all"] for im, p in zip(images, prompts)]
        return [None if v is None or v != v else float(v) for v in verdicts]

    def annotate(self, image, prompt: str, dns: bool = False) -> dict:
        """The record fields of one image: its verdict per attribute (None for a prompt outside the
        toy grammar) and, for the final image, the quality proxy."""
        verdict = None if parse_caption(prompt) is None else _json(judge(image, prompt))
        return {"dns_judge": verdict} if dns else {"judge": verdict, "quality": _json(quality(image))}
