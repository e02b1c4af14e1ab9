"""Every sampling method, one file each (docs/METHODS.md): as a diffusers guider file holds its knobs
and math, a method's file holds its settings model, its sampler strategy, the fields it adds to a
record and its NFE; the equations themselves are pure torch in `dnp_batch.guidance`.

- `cfg.py`, `np.py`, `dns.py`: classifier-free guidance, negative prompting, the DNS chain
- `dnp.py`: DNP with a person's negatives (`dnp`) or a captioner's (`auto-dnp`)
- `cnp.py`: DNP re-captioned every few steps; `answer.py`: ANSWER; `apg.py`: APG
- `base.py`: `Method`, a `generate()` call's settings (`Call`), the batch being sampled (`Chunk`),
  the DNP helpers

A method is a `Method` subclass with a `name` in a module of this package: the registry below finds
it, so adding one touches only its own file.

    m = methods.get("answer")        # the method object
    m.settings                       # its pydantic settings model (AnswerSettings), or None
    methods.resolve(AnswerSettings(k=3))   # (the answer method, those settings): generate(method=...)
    m.needs_negative, m.needs_captioner
    m.nfe(30, AnswerSettings())        # 120
"""

from __future__ import annotations

import importlib
import pkgutil

from ..settings import Strict
from .answer import AnswerSettings
from .apg import ApgSettings
from .base import (DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, Call, Chunk, Method, blank_to_none, captioner_record,
                   clean_captions, fresh_seed)
from .cnp import CnpSettings
from .dnp import DnpSettings


def _discover() -> dict[str, Method]:
    """One instance of every `Method` subclass with a name, from every module of this package, in
    the order the classes give (`order`)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found, todo = [], list(Method.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "name" in vars(cls):
            found.append(cls)
    names = [cls.name for cls in found]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two methods share a name: {sorted(names)}")
    return {cls.name: cls() for cls in sorted(found, key=lambda cls: cls.order)}


REGISTRY: dict[str, Method] = _discover()
METHODS = tuple(REGISTRY)


def get(name: str) -> Method:
    """The registered method called `name`; a clear error listing the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
    return REGISTRY[name]


def resolve(method) -> tuple[Method, Strict | None]:
    """A `method=` argument as (the method, its settings): a registered name, with the method's
    default settings, or a method's settings object (`AnswerSettings(k=3)`), which names its method."""
    if isinstance(method, str):
        m = get(method)
        return m, m.settings() if m.settings else None
    for m in REGISTRY.values():
        if m.settings is not None and type(method) is m.settings:
            return m, method
    models = ", ".join(m.settings.__name__ for m in REGISTRY.values() if m.settings)
    raise ValueError(f"method must be a name ({', '.join(METHODS)}) or a method's settings ({models}); "
                     f"got {type(method).__name__}")


def sections() -> dict[str, type[Strict]]:
    """{section: settings model} of every method that has knobs (JobConfig's method sections)."""
    return {m.section: m.settings for m in REGISTRY.values() if m.section}


def setting_axes() -> list[str]:
    """Every method knob as a dotted config key (`answer.k`, `cnp.every`, ...): sweepable axes."""
    return [f"{section}.{name}" for section, model in sections().items() for name in model.model_fields]


__all__ = ["DEFAULT_GUIDANCE_SCALE", "DEFAULT_STEPS", "METHODS", "REGISTRY", "AnswerSettings", "ApgSettings",
           "CnpSettings", "DnpSettings", "Method", "Call",
           "Chunk", "blank_to_none", "captioner_record", "clean_captions", "fresh_seed", "get", "resolve", "sections",
           "setting_axes"]
