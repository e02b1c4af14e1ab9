"""The job's stages as a list, with the resources each asks for."""

from __future__ import annotations

from dataclasses import dataclass

from .. import methods
from ..config import JobConfig, StageResources
from .generate import DnsCaptionStage, GenerationStage
from .score import ScoringStage
from .write import WriteStage


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
