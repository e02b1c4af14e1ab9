"""The toy world's glue in the stages: its exact judge's verdict on a record."""

from __future__ import annotations

from ..config import JobConfig
from ..toyworld.data import parse_caption
from ..toyworld.judge import judge, quality


def uses_judge(cfg: JobConfig) -> bool:
    return cfg.judged()


def judge_prompt(image, prompt: str) -> dict | None:
    """The toy judge's verdict per attribute (None where it does not apply), or None for a prompt
    outside the toy grammar."""
    if parse_caption(prompt) is None:
        return None
    return {k: None if v != v else v for k, v in judge(image, prompt).items()}  # NaN -> None (JSON)


def quality_record(image) -> dict:
    """The toy world's image-quality proxy, NaN as None (JSON)."""
    return {k: None if v != v else v for k, v in quality(image).items()}
