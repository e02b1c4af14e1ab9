"""Every sampling method in one place (docs/METHODS.md): its knobs, their checks and defaults, the
inputs it needs, its sampler strategy, the fields it adds to a record and its NFE.

A method is a `Method` subclass registered in `REGISTRY`; `generate()`, the job's config and
stages, sweeps and benches dispatch through it, so adding a method touches this file,
`guidance.py` (its equations) and `sampler.py` (its strategy), and nothing else. As in diffusers'
guiders, each method declares what it needs; unlike them, the branches of one step run in one
batched UNet call (the sampler's `Denoiser`).

    m = methods.get("answer")        # the method object
    m.settings                       # its pydantic settings model (AnswerConfig), or None
    m.needs_negative, m.needs_captioner
    m.nfe(30, AnswerConfig())        # 120
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from pydantic import field_validator

from . import guidance, sampler
from .settings import Strict, check_choice

NEGATIVE_EPS_MODES = sampler.NEGATIVE_EPS_MODES


# ---- settings: one pydantic model per method section, used by generate() and JobConfig alike ----


class AnswerConfig(Strict):
    """ANSWER's knobs (docs/METHODS.md §ANSWER); defaults as pinned there."""

    k: int = 2
    until: float = 0.5
    shape: str = "constant"
    normalize: str = "global"
    negative_eps: str = "dns_guided"
    negative_scale: float | None = None  # λ; None = w - 1 in the paper's form; 0 = CFG exactly

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"answer.k must be an integer >= 0, got {v!r}")
        return v

    @field_validator("until", mode="before")
    @classmethod
    def _until(cls, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"answer.until must be a fraction in [0, 1], got {v!r}")
        return v

    @field_validator("shape", mode="before")
    @classmethod
    def _shape(cls, v):
        return check_choice("answer.shape", v, guidance.K_SHAPES)

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize(cls, v):
        return check_choice("answer.normalize", v, guidance.NORMALIZE_MODES)

    @field_validator("negative_eps", mode="before")
    @classmethod
    def _negative_eps(cls, v):
        return check_choice("answer.negative_eps", v, NEGATIVE_EPS_MODES)

    @field_validator("negative_scale", mode="before")
    @classmethod
    def _negative_scale(cls, v):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
            raise ValueError(f"answer.negative_scale must be a number or null, got {v!r}")
        return v

    def schedule(self, num_steps: int) -> list[int]:
        """K_i per step; all 0 when λ = 0 (the push is off, so no mini-chain runs)."""
        if self.negative_scale == 0:
            return [0] * num_steps
        return [guidance.k_schedule(i, num_steps, self.k, self.until, self.shape) for i in range(num_steps)]


class DnpSettings(Strict):
    """auto-DNP (docs/METHODS.md §DNP): NP starts from the DNS chain's z_T, or from a fresh seed."""

    same_seed: bool = True

    @field_validator("same_seed", mode="before")
    @classmethod
    def _same_seed(cls, v):
        if not isinstance(v, bool):
            raise ValueError(f"dnp.same_seed must be true or false, got {v!r}")
        return v


class CnpSettings(Strict):
    """CNP (docs/METHODS.md §CNP): refresh the negative every N steps (1 = the paper's CNP)."""

    every: int = 1

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"cnp.every must be an integer >= 1, got {v!r}")
        return v


class ApgSettings(Strict):
    """APG (docs/METHODS.md §APG): diffusers' `AdaptiveProjectedGuidance` knobs and defaults
    (`norm_threshold` is its `adaptive_projected_guidance_rescale`, `momentum` its
    `adaptive_projected_guidance_momentum`)."""

    eta: float = 1.0
    norm_threshold: float = 15.0
    momentum: float | None = None

    @field_validator("eta", "norm_threshold", "momentum", mode="before")
    @classmethod
    def _number(cls, v, info):
        if v is None and info.field_name == "momentum":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise ValueError(f"apg.{info.field_name} must be a number, got {v!r}")
        if info.field_name == "norm_threshold" and v < 0:
            raise ValueError(f"apg.norm_threshold must be >= 0 (0: no clipping), got {v!r}")
        return v


# ---- one generate() call's fixed settings, and the chains every method is made of ------------------


def fresh_seed(seed: int) -> int:
    """docs/METHODS.md §DNP `same_seed: false`: a new seed for NP, derived from the sample's own."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1, dtype=np.uint32)[0])


def blank_to_none(text: str) -> str | None:
    """An empty or whitespace negative (caption or human) means no negative prompt (§DNP)."""
    return text.strip() or None


def clean_captions(captions) -> list[str]:
    """Captions as auto-DNP and CNP use them: stripped (an empty one means no negative)."""
    return [c.strip() for c in captions]


def captioner_record(captioner) -> dict:
    """How a record names its captioner: a `Captioner` (or callable) described, or such a
    description as given (auto-DNP's phase two, run where the captioner is not loaded)."""
    if isinstance(captioner, dict):
        return dict(captioner)
    return {"model": getattr(captioner, "model_id", type(captioner).__name__),
            "max_new_tokens": getattr(captioner, "max_new_tokens", None),
            "prompt": getattr(captioner, "prompt", None)}


@dataclass
class Run:
    """One `generate` call's fixed settings (the method's own in `settings`, by section name)."""

    pipe: Any
    method: "Method"
    guidance_scale: float
    dns_guidance_scale: float
    guidance_rescale: float
    steps: int
    height: int
    width: int
    settings: dict[str, Strict] = field(default_factory=dict)
    captioner: Any = None
    output_type: str = "pil"
    callback: Callable[[dict], None] | None = None

    def setting(self) -> Strict | None:
        """This run's settings of its own method's section."""
        return self.settings.get(self.method.section) if self.method.section else None

    def caption(self, images) -> list[str]:
        return clean_captions(getattr(self.captioner, "caption", self.captioner)(images))

    def params(self) -> dict:
        """The run's record fields: the method's own, then what every record carries."""
        pipe = self.pipe
        return {
            "guidance_scale": self.guidance_scale,
            "guidance_rescale": self.guidance_rescale,
            **self.method.record_fields(self),
            "num_inference_steps": self.steps,
            "height": self.height,
            "width": self.width,
            "scheduler": type(pipe.scheduler).__name__,
            "scheduler_config": dict(pipe.scheduler.config),
            "model": pipe.config._name_or_path,
            "pipeline": type(pipe).__name__,
            "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        }

    def chain(self, denoise, strategy, pos, null, neg, seeds, callback=None) -> torch.Tensor:
        """One full chain from z_T (drawn from the seeds) to z_0."""
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(self.steps, device=self.pipe._execution_device)
        if len(scheduler.timesteps) != self.steps:
            raise ValueError(
                f"scheduler {type(scheduler).__name__} takes {len(scheduler.timesteps)} model steps for "
                f"{self.steps} inference steps; only schedulers with one model call per step are supported"
            )
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        batch = sampler.Batch(pos, null, neg, list(seeds), generators)
        z = sampler.initial_latents(self.pipe, scheduler, generators, self.height, self.width, pos.embeds.dtype)
        return sampler.sample(denoise, scheduler, z, strategy, batch, callback)

    def describe(self, z_dns: torch.Tensor, null) -> tuple[list, list[str], sampler.Cond]:
        """DNS latents -> (images, captions, negative condition): §DNP steps 1-2."""
        images = sampler.decode(self.pipe, z_dns, "pil")
        captions = self.caption(images)
        neg = sampler.negative_cond(self.pipe, [c or None for c in captions], null, self.height, self.width)
        return images, captions, neg


@dataclass
class Step:
    """A batch being sampled: its conditions and what each method adds to each sample's record."""

    prompts: list[str]
    seeds: list[int]
    negatives: list[str] | None
    pos: sampler.Cond
    null: sampler.Cond
    denoise: sampler.Denoiser
    extras: list[dict]  # per sample, starts as {"negative_prompt": None}
    dns_images: list | None = None


# ---- the methods ---------------------------------------------------------------------------------


class Method:
    """A sampling method. Subclasses set `name` and what they need, and implement `sample`."""

    name: ClassVar[str]
    section: ClassVar[str | None] = None  # its settings' key in JobConfig and generate(settings=...)
    settings: ClassVar[type[Strict] | None] = None
    needs_negative: ClassVar[bool] = False  # the caller gives one negative prompt per sample
    needs_captioner: ClassVar[bool] = False  # it captions its DNS images (auto-DNP, CNP)
    uses_dns_scale: ClassVar[bool] = False  # w_dns is one of its knobs (and in its records)
    stages: ClassVar[tuple[str, ...]] = ("generate",)  # the job's model stages, in order
    writes_negatives_file: ClassVar[bool] = False  # human DNP phase one: the job writes negatives.jsonl
    reads_negatives_file: ClassVar[bool] = False  # human DNP phase two: the job's --negatives

    def record_fields(self, run: Run) -> dict:
        """What this method adds to every record besides the common fields."""
        return {"dns_guidance_scale": run.dns_guidance_scale} if self.uses_dns_scale else {}

    def strategy(self, run: Run):
        """The sampler strategy (`sampler.CFG`, ...) of a single-chain method."""
        raise NotImplementedError

    def sample(self, run: Run, step: Step) -> torch.Tensor:
        """The final latents of the batch (filling `step.extras` / `step.dns_images`): by default
        one chain from z_T with `strategy`."""
        return run.chain(step.denoise, self.strategy(run), step.pos, step.null, None, step.seeds, run.callback)

    def nfe(self, steps: int, settings: Strict | None = None) -> int:
        """UNet evaluations per sample (docs/METHODS.md's formula)."""
        return 2 * steps


class Cfg(Method):
    """§CFG."""

    name = "cfg"

    def strategy(self, run):
        return sampler.CFG(run.guidance_scale, run.guidance_rescale)


class Dns(Method):
    """§DNS: the least compliant image (CFG with p and ∅ swapped). Phase one of human DNP."""

    name = "dns"
    uses_dns_scale = True
    writes_negatives_file = True

    def strategy(self, run):
        return sampler.DNS(run.dns_guidance_scale, run.guidance_rescale)


class NegativePrompt(Method):
    """§NP with the caller's negative prompts ("" encodes "", as diffusers does)."""

    name = "np"
    needs_negative = True

    def texts(self, negatives: list[str]) -> list[str | None]:
        return list(negatives)

    def sample(self, run, step):
        texts = self.texts(step.negatives)
        for extra, given, used in zip(step.extras, step.negatives, texts):
            extra.update(negative_prompt=given, **self.negative_fields(used))
        neg = sampler.negative_cond(run.pipe, texts, step.null, run.height, run.width)
        strategy = sampler.NegativePrompt(run.guidance_scale, run.guidance_rescale)
        return run.chain(step.denoise, strategy, step.pos, step.null, neg, step.seeds, run.callback)

    def negative_fields(self, used: str | None) -> dict:
        return {}


class HumanDnp(NegativePrompt):
    """§DNP phase two with a person's negatives (from phase one's DNS images); a blank one
    falls back to no negative prompt."""

    name = "dnp"
    reads_negatives_file = True

    def texts(self, negatives):
        return [blank_to_none(n) for n in negatives]

    def negative_fields(self, used):
        return {"empty_negative": used is None}


class AutoDnp(Method):
    """§DNP with a captioner: DNS, caption x⁻ -> n*, then NP with (p, n*). Two phases, which the
    job runs as two stages (`describe` on the captioner's GPU, then `from_captions`)."""

    name = "auto-dnp"
    section = "dnp"
    settings = DnpSettings
    needs_captioner = True
    uses_dns_scale = True
    stages = ("dns_caption", "generate")

    def record_fields(self, run):
        return {"dns_guidance_scale": run.dns_guidance_scale, "captioner": captioner_record(run.captioner),
                "same_seed": run.setting().same_seed}

    def nfe(self, steps, settings=None):
        return 4 * steps

    def np_seeds(self, seeds: list[int], settings: DnpSettings) -> list[int]:
        return list(seeds) if settings.same_seed else [fresh_seed(s) for s in seeds]

    def describe(self, run: Run, step: Step) -> tuple[list, list[str]]:
        """Phase one (§DNP steps 1-2): the DNS chain, decoded and captioned -> (x⁻ images, n*)."""
        strategy = sampler.DNS(run.dns_guidance_scale, run.guidance_rescale)
        z_dns = run.chain(step.denoise, strategy, step.pos, step.null, None, step.seeds)
        images = sampler.decode(run.pipe, z_dns, "pil")
        return images, run.caption(images)

    def from_captions(self, run: Run, step: Step, captions: list[str]) -> torch.Tensor:
        """Phase two (§DNP step 3): NP with (p, n*) from the same z_T (or a fresh seed)."""
        np_seeds = self.np_seeds(step.seeds, run.setting())
        for extra, caption, s in zip(step.extras, captions, np_seeds):
            extra.update(negative_prompt=caption, empty_negative=not caption, np_seed=s, captions=1)
        neg = sampler.negative_cond(run.pipe, [c or None for c in captions], step.null, run.height, run.width)
        strategy = sampler.NegativePrompt(run.guidance_scale, run.guidance_rescale)
        return run.chain(step.denoise, strategy, step.pos, step.null, neg, np_seeds, run.callback)

    def sample(self, run, step):
        step.dns_images, captions = self.describe(run, step)
        return self.from_captions(run, step, captions)


class Cnp(Method):
    """§CNP: the DNS chain from z_{t_i} re-described every `every` steps as the negative."""

    name = "cnp"
    section = "cnp"
    settings = CnpSettings
    needs_captioner = True
    uses_dns_scale = True

    def record_fields(self, run):
        return {"dns_guidance_scale": run.dns_guidance_scale, "captioner": captioner_record(run.captioner),
                "cnp_every": run.setting().every}

    def nfe(self, steps, settings=None):
        every = (settings or CnpSettings()).every
        return 2 * steps + sum(2 * (steps - i) for i in range(0, steps, every))

    def sample(self, run, step):
        refreshes: list[list[str]] = []

        def describe(z_dns, i):
            images, captions, neg = run.describe(z_dns, step.null)
            step.dns_images = step.dns_images or images  # the full DNS chain from z_T
            refreshes.append(captions)
            return neg

        strategy = sampler.CNP(run.guidance_scale, run.dns_guidance_scale, run.setting().every, describe,
                               run.guidance_rescale)
        z = run.chain(step.denoise, strategy, step.pos, step.null, None, step.seeds, run.callback)
        for j, extra in enumerate(step.extras):
            captions = [r[j] for r in refreshes]
            extra.update(negative_prompt=captions[-1], empty_negative=not captions[-1], cnp_captions=captions,
                         captions=len(captions))
        return z


class Answer(Method):
    """§ANSWER: a K-step DNS mini-chain's normalised prediction replaces CFG's ∅ branch."""

    name = "answer"
    section = "answer"
    settings = AnswerConfig
    uses_dns_scale = True

    def record_fields(self, run):
        answer: AnswerConfig = run.setting()
        return {"dns_guidance_scale": run.dns_guidance_scale,
                "answer": {**answer.model_dump(), "k_schedule": answer.schedule(run.steps)}}

    def nfe(self, steps, settings=None):
        answer = settings or AnswerConfig()
        return guidance.answer_nfe(steps, answer.schedule(steps), answer.negative_eps)

    def strategy(self, run):
        answer: AnswerConfig = run.setting()
        return sampler.Answer(run.guidance_scale, run.dns_guidance_scale, answer.schedule(run.steps),
                              answer.normalize, answer.negative_eps, run.guidance_rescale, answer.negative_scale)


class Apg(Method):
    """§APG: a modern baseline; CFG's update projected against eps_p and norm-clipped."""

    name = "apg"
    section = "apg"
    settings = ApgSettings

    def record_fields(self, run):
        return {"apg": run.setting().model_dump()}

    def strategy(self, run):
        apg: ApgSettings = run.setting()
        return sampler.APG(run.guidance_scale, apg.eta, apg.norm_threshold, apg.momentum, run.guidance_rescale)


REGISTRY: dict[str, Method] = {m.name: m for m in (Cfg(), NegativePrompt(), Dns(), HumanDnp(), AutoDnp(), Cnp(),
                                                     Answer(), Apg())}
METHODS = tuple(REGISTRY)


def get(name: str) -> Method:
    """The registered method called `name`; a clear error listing the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
    return REGISTRY[name]


def sections() -> dict[str, type[Strict]]:
    """{section: settings model} of every method that has knobs (JobConfig's method sections)."""
    return {m.section: m.settings for m in REGISTRY.values() if m.section}


def setting_axes() -> list[str]:
    """Every method knob as a dotted config key (`answer.k`, `cnp.every`, ...): sweepable axes."""
    return [f"{section}.{name}" for section, model in sections().items() for name in model.model_fields]
