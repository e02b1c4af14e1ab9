"""§DNP (docs/METHODS.md): DNS, described in words, as the negative prompt of NP: by a person
(`dnp`, two runs) or by a captioner (`auto-dnp`, two stages of one job)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from ..settings import Strict
from .base import Call, Chunk, Method, blank_to_none, captioner_record, fresh_seed
from .dns import DnsStrategy
from .np import NegativePrompt, NpStrategy

if TYPE_CHECKING:
    import torch


class DnpSettings(Strict):
    """auto-DNP (docs/METHODS.md §DNP): NP starts from the DNS chain's z_T, or from a fresh seed."""

    section: ClassVar[str] = "dnp"

    same_seed: bool = Field(True, strict=True, description="true or false")


class HumanDnp(NegativePrompt):
    """§DNP phase two with a person's negatives (from phase one's DNS images); a blank one
    falls back to no negative prompt."""

    name = "dnp"
    order = 4
    reads_negatives_file = True

    def texts(self, negatives):
        return [blank_to_none(n) for n in negatives]

    def negative_fields(self, used):
        return {"empty_negative": used is None}


class AutoDnp(Method):
    """§DNP with a captioner: DNS, caption x⁻ -> n*, then NP with (p, n*). Two phases, which the
    job runs as two stages (`describe` on the captioner's GPU, then `from_captions`)."""

    name = "auto-dnp"
    order = 5
    settings = DnpSettings
    needs_captioner = True
    uses_dns_scale = True
    stages = ("dns_caption", "generate")

    def record_fields(self, call):
        return {"dns_guidance_scale": call.dns_guidance_scale, "captioner": captioner_record(call.captioner),
                "same_seed": call.setting().same_seed}

    def nfe(self, steps, settings=None):
        return 4 * steps

    def np_seeds(self, seeds: list[int], settings: DnpSettings) -> list[int]:
        return list(seeds) if settings.same_seed else [fresh_seed(s) for s in seeds]

    def describe(self, call: Call, chunk: Chunk) -> tuple[list, list[str]]:
        """Phase one (§DNP steps 1-2): the DNS chain, decoded and captioned -> (x⁻ images, n*)."""
        from .. import families  # here, not at the top: reading a config loads no diffusers

        strategy = DnsStrategy(call.dns_guidance_scale, call.guidance_rescale)
        z_dns = call.chain(chunk.denoise, strategy, chunk.pos, chunk.null, None, chunk.seeds)
        images = families.decode(call.pipe, z_dns, "pil")
        return images, call.caption(images)

    def from_captions(self, call: Call, chunk: Chunk, captions: list[str]) -> torch.Tensor:
        """Phase two (§DNP step 3): NP with (p, n*) from the same z_T (or a fresh seed)."""
        from .. import families

        np_seeds = self.np_seeds(chunk.seeds, call.setting())
        for extra, caption, s in zip(chunk.extras, captions, np_seeds):
            extra.update(negative_prompt=caption, empty_negative=not caption, np_seed=s, captions=1)
        neg = families.negative_cond(call.pipe, [c or None for c in captions], chunk.null, call.height, call.width)
        strategy = NpStrategy(call.guidance_scale, call.guidance_rescale)
        return call.chain(chunk.denoise, strategy, chunk.pos, chunk.null, neg, np_seeds, call.callback)

    def sample(self, call, chunk):
        chunk.dns_images, captions = self.describe(call, chunk)
        return self.from_captions(call, chunk, captions)
