"""The job's typed configuration: YAML in, validated pydantic models out, unknown keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import api


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnswerSettings(_Strict):
    k: int = Field(2, ge=0)
    until: float = Field(0.5, ge=0.0, le=1.0)
    shape: Literal["constant", "linear"] = "constant"
    normalize: Literal["global", "channel", "none"] = "global"
    negative_eps: Literal["dns_guided", "uncond", "cond"] = "dns_guided"

    def to_api(self) -> api.AnswerConfig:
        return api.AnswerConfig(**self.model_dump())


class CaptionerSettings(_Strict):
    """METHODS.md §DNP: BLIP-2, unconditional (no prompt), greedy, max_new_tokens=30."""

    model: str = "tiny-blip2"  # hub id (e.g. Salesforce/blip2-opt-2.7b), local dir, or tiny-blip2
    max_new_tokens: int = Field(30, ge=1)
    prompt: str | None = None


class ClipSettings(_Strict):
    model: str | None = "tiny-clip"  # open_clip name (e.g. ViT-H-14), local dir, tiny-clip; None: no score
    pretrained: str | None = None  # open_clip pretrained tag (e.g. laion2b_s32b_b79k)
    batch_size: int = Field(32, ge=1)


class DnpSettings(_Strict):
    same_seed: bool = True  # NP starts from the DNS chain's z_T


class CnpSettings(_Strict):
    every: int = Field(1, ge=1)  # refresh the negative every N steps (1 = the paper's CNP)


class JobConfig(_Strict):
    """Built-in defaults: METHODS.md's hyperparameters on the tiny SDXL model (no downloads)."""

    model: str = "tiny-sdxl"  # hub id, local diffusers dir, or tiny-sdxl / tiny-sd (built on first use)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "auto"  # auto = cuda when available, else cpu
    scheduler: str | None = None  # None keeps the model's own; else a name of models.SCHEDULERS
    method: Literal["cfg", "np", "dns", "dnp", "auto-dnp", "cnp", "answer"] = "answer"
    guidance_scale: float = api.DEFAULT_GUIDANCE_SCALE
    dns_guidance_scale: float | None = None  # None = guidance_scale (METHODS.md: w_dns = w)
    guidance_rescale: float = Field(0.0, ge=0.0, le=1.0)
    steps: int = Field(api.DEFAULT_STEPS, ge=1)
    height: int | None = None  # None = the model's native size
    width: int | None = None
    seeds: int = Field(1, ge=1)  # seeds 0..N-1 for every prompt without its own seed
    batch_size: int = Field(4, ge=1)
    answer: AnswerSettings = AnswerSettings()
    dnp: DnpSettings = DnpSettings()
    cnp: CnpSettings = CnpSettings()
    captioner: CaptionerSettings = CaptionerSettings()
    clip: ClipSettings = ClipSettings()


def load_config(path: str | Path | None = None, **overrides) -> JobConfig:
    """Read a YAML config (or the built-in defaults) and apply overrides whose value is not None."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return JobConfig(**data)
    except ValidationError as e:
        where = f"config file {path}" if path else "config"
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{where}: {problems}") from None
