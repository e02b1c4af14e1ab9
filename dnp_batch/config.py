"""The job's typed configuration: YAML in, validated pydantic models out, unknown keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from . import methods, scorers
from .methods import AnswerSettings, ApgSettings, CnpSettings, DnpSettings
from . import plugins
from .names import check_scheduler
from .scorers import AestheticSettings, HpsSettings, ImageRewardSettings, PickScoreSettings
from .settings import SettingsError, Strict, extra_key


class CaptionerSettings(Strict):
    """docs/METHODS.md §DNP: BLIP-2, unconditional (no prompt), greedy, max_new_tokens=30."""

    model: str = "tiny-blip2"  # hub id (e.g. Salesforce/blip2-opt-2.7b), local dir, or tiny-blip2
    max_new_tokens: int = Field(30, ge=1)
    prompt: str | None = None


class ClipSettings(Strict):
    model: str | None = "tiny-clip"  # open_clip name (e.g. ViT-H-14), local dir, tiny-clip; None: no score
    pretrained: str | None = None  # open_clip pretrained tag (e.g. laion2b_s32b_b79k)
    batch_size: int = Field(32, ge=1)


class ScorersSettings(Strict):
    """One section per scorer with weights besides CLIP (whose settings stay in `clip:`), as in the
    registry (dnp_batch.scorers.SETTINGS; a test checks they agree); defaults: the published weights."""

    pickscore: PickScoreSettings = PickScoreSettings()
    hps: HpsSettings = HpsSettings()
    imagereward: ImageRewardSettings = ImageRewardSettings()
    aesthetic: AestheticSettings = AestheticSettings()


def _known_scores(names: list[str] | None) -> list[str] | None:
    if names is None:
        return None
    for name in names:
        scorers.get(name)  # unknown -> "unknown scorer 'x'; known: ..."
    if len(set(names)) != len(names):
        raise ValueError(f"scores {names} names a scorer twice; name each once")
    return names


class ActorRange(Strict):
    """An autoscaling pool: Ray Data starts `min` actors and adds actors up to `max` while work is
    queued and the cluster has room (GPUs that an autoscaling cluster brings), and gives idle ones back."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.max < self.min:
            raise ValueError(f"actors.max ({self.max}) must be >= actors.min ({self.min})")
        return self


class StageResources(Strict):
    """What one Ray actor (or task) of a stage asks for; `actors` actors per stage: a count (a fixed
    pool) or `{min, max}` (an autoscaling pool)."""

    actors: PositiveInt | ActorRange = 1
    num_gpus: float = Field(0.0, ge=0.0)  # fractions let two stages share a GPU
    num_cpus: float = Field(0.5, gt=0.0)

    @field_validator("actors", mode="before")
    @classmethod
    def _actors(cls, v):
        """One message for either form (a union's error would list both alternatives)."""
        if isinstance(v, dict):
            return ActorRange(**v)
        if isinstance(v, ActorRange) or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"actors must be a positive integer or {{min: N, max: M}}, got {v!r}")

    @property
    def max_actors(self) -> int:
        return self.actors if isinstance(self.actors, int) else self.actors.max


class StagesSettings(Strict):
    generate: StageResources = StageResources()
    dns_caption: StageResources = StageResources()  # auto-dnp's first stage
    score: StageResources = StageResources(num_cpus=0.25)
    write: StageResources = StageResources(num_cpus=0.25)


class OutputSettings(Strict):
    image_format: Literal["png", "jpg", "webp"] = "png"
    quality: int = Field(95, ge=1, le=100)  # jpg/webp
    samples_per_shard: int = Field(100, ge=1)


# The built-in default: the toy world's trained model (its plug-in, dnp_batch/toyworld/plugin.py,
# gives it the settings its study chose), so the README's first job needs no download.
DEFAULT_MODEL = "toy-shapes"


class JobConfig(Strict):
    """Built-in defaults: the trained toy-world model of this repository (no downloads), whose exact
    judge also captions (auto-DNP, CNP) and scores, with the settings the toy-world study chose by
    its pre-declared rule (a plug-in model's defaults, dnp_batch.plugins); on other models,
    docs/METHODS.md's hyperparameters. Each
    method with knobs has its section, its settings model from its file in `dnp_batch.methods`:
    the built-in methods' sections are declared below (a test checks they are the registry's); a
    method added since (its file alone) has its section checked by its own settings model all the
    same, and read as `cfg.SECTION` (`_registered_sections`), so adding a method needs no line here."""

    # Unknown keys are still refused (`_registered_sections`); "allow" only lets a registered
    # method's section that is not declared below through, validated by that method's model.
    model_config = ConfigDict({**Strict.model_config, "extra": "allow"})

    model: str = DEFAULT_MODEL  # hub id, local diffusers dir, toy-shapes (a plug-in's name), or tiny-sdxl / tiny-sd
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "auto"  # auto = cuda when available, else cpu
    scheduler: Annotated[str | None, AfterValidator(check_scheduler)] = None  # None: the model's own
    vae: str | None = None  # a replacement VAE (hub id or dir), e.g. madebyollin/sdxl-vae-fp16-fix: fp16 decode
    compile_unet: bool = False  # torch.compile the UNet in place (~1.1x images/s, SDXL on an H200: bench/gpu.py)
    method: Literal[methods.METHODS] = "answer"
    guidance_scale: float = methods.DEFAULT_GUIDANCE_SCALE
    dns_guidance_scale: float | None = None  # None = guidance_scale (docs/METHODS.md: w_dns = w)
    guidance_rescale: float = Field(0.0, ge=0.0, le=1.0)
    norm_rescale: bool | None = None  # Qwen-Image's per-token rescale of guided predictions; None: as its pipeline (on)
    steps: int = Field(methods.DEFAULT_STEPS, ge=1)
    height: int | None = None  # None = the model's native size
    width: int | None = None
    seeds: PositiveInt | list[NonNegativeInt] = 1  # N: seeds 0..N-1; a list: those seeds (rows' own win)
    batch_size: int = Field(4, ge=1)
    cpu_threads: int = Field(1, ge=1)  # torch threads per stage on CPU: fixed, so bytes don't depend on placement
    captioner: CaptionerSettings = CaptionerSettings()
    clip: ClipSettings = ClipSettings()  # the `clip` scorer's weights
    judge: bool | None = None  # the toy world's exact judge in every record; None: as the model's plug-in says
    # The scores every record carries (dnp_batch.scorers: clip, pickscore, hps, imagereward, aesthetic,
    # judge); None: clip (unless clip.model is null) plus the judge where `judge` puts it on.
    scores: Annotated[list[str] | None, AfterValidator(_known_scores)] = None
    scorers: ScorersSettings = ScorersSettings()  # the other scorers' weights (hub ids, local dirs, tiny-*)
    output: OutputSettings = OutputSettings()
    stages: StagesSettings = StagesSettings()
    # the methods' sections (methods.sections()): `answer:`, `dnp:` (auto-DNP), `cnp:`, `apg:`
    answer: AnswerSettings = AnswerSettings()
    dnp: DnpSettings = DnpSettings()
    cnp: CnpSettings = CnpSettings()
    apg: ApgSettings = ApgSettings()

    @model_validator(mode="before")
    @classmethod
    def _before(cls, data):
        return cls._registered_sections(cls._model_defaults(data))

    @classmethod
    def _model_defaults(cls, data):
        """A plug-in's model (toy-shapes) brings its own defaults: the settings left unset take them
        (a section key by key)."""
        named = plugins.model(data.get("model", DEFAULT_MODEL)) if isinstance(data, dict) else None
        if named is not None:
            data = dict(data)
            for key, value in named.defaults.items():
                if isinstance(value, dict):
                    data[key] = {**value, **dict(data.get(key) or {})}
                else:
                    data.setdefault(key, value)
        return data

    @classmethod
    def _registered_sections(cls, data):
        """Every key is a declared field or the section of a registered method that is not declared
        (its file is the only place it is written): that section becomes its settings model (its
        defaults when absent), checked with the same one-line messages; any other key is refused."""
        if not isinstance(data, dict):
            return data
        undeclared = {k: m for k, m in methods.sections().items() if k not in cls.model_fields}
        for key in data:
            if key not in cls.model_fields and key not in undeclared:
                raise ValueError(extra_key([str(key)]))
        data = dict(data)
        for section, model in undeclared.items():
            value = data.get(section) or {}
            if isinstance(value, model):
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{section} must be a mapping of its settings, got {value!r}")
            try:
                data[section] = model(**value)
            except SettingsError as e:
                raise SettingsError([([section, *keys], what) for keys, what in e.problems]) from None
        return data

    @model_validator(mode="after")
    def _scores_agree(self):
        if self.scores is not None:
            if "clip" in self.scores and not self.clip.model:
                raise ValueError("scores lists clip but clip.model is null; name a CLIP model or drop clip")
            if self.judge is not None and self.judge != ("judge" in self.scores):
                raise ValueError(f"judge: {str(self.judge).lower()} disagrees with scores {self.scores}; "
                                 "list judge in scores (or not) and drop the judge key")
        return self

    def judged(self) -> bool:
        """The toy world's exact judge runs (records get `judge`, `quality` and the `judge` score)."""
        if self.scores is not None:
            return "judge" in self.scores
        if self.judge is not None:
            return self.judge
        named = plugins.model(self.model)
        return named is not None and "judge" in named.scores

    def score_names(self) -> list[str]:
        """The scorers every record carries, in order."""
        if self.scores is not None:
            return list(self.scores)
        return (["clip"] if self.clip.model else []) + (["judge"] if self.judged() else [])

    def scorer_settings(self, name: str):
        """The settings the registry loads scorer `name` with (`clip:` for clip, else `scorers.NAME`)."""
        return self.clip if name == "clip" else getattr(self.scorers, name, None)


def parse_override(text: str) -> tuple[list[str], object]:
    """`answer.k=3` -> (["answer", "k"], 3); the value is read as YAML (numbers, bools, lists, null)."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise ValueError(f"--set {text!r}: expected KEY=VALUE, e.g. --set answer.k=3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return path.strip().split("."), parsed


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file that must hold a mapping; errors name the file (`what`: "config file", ...)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, sets: list[str] = (), **overrides) -> JobConfig:
    """Read a YAML config (or the built-in defaults), apply `--set KEY=VALUE` overrides, then the
    keyword overrides whose value is not None. Unknown keys are errors naming the key."""
    data: dict = {} if path is None else read_yaml_mapping(path, "config file")
    for text in sets:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ValueError(f"--set {text!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    try:
        return JobConfig(**data)  # a refused value: one line per key (settings.describe_errors)
    except SettingsError as e:
        raise ValueError(f"{f'config file {path}' if path else 'config'}: {e}") from None
