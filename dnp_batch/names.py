"""The model names a config may give besides a hub id or a local dir, and where each one lives.

- `tiny-*`: the tiny random twins of every model, built on first use into the cache by
  `dnp_batch.tiny` (this is the only module that imports it)
- the names the plug-ins add (`dnp_batch.plugins`): the toy world's `toy-shapes`, the model
  trained on CPU and committed in models/toy-shapes

Loaders take what `resolve_model` returns; records keep the name as configured. Also the scheduler
short names a config may give (`SCHEDULER_CLASSES`: name -> diffusers class, which `models` loads).
"""

from __future__ import annotations

from . import plugins

TINY_MODELS = {"tiny-sdxl": "sdxl", "tiny-sd": "sd", "tiny-sd3": "sd3", "tiny-qwenimage": "qwenimage", "tiny-blip2": "blip2", "tiny-clip": "clip",
               "tiny-pickscore": "pickscore", "tiny-hps": "hps", "tiny-imagereward": "imagereward",
               "tiny-aesthetic": "aesthetic"}


# Scheduler short names -> diffusers classes, each built with `from_config(pipe.scheduler.config)`.
SCHEDULER_CLASSES = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",  # algorithm_type="dpmsolver++" is its default
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def check_scheduler(name: str | None) -> str | None:
    """`name` if it is a scheduler short name (or None: the model's own), else a ValueError."""
    if name is not None and name not in SCHEDULER_CLASSES:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULER_CLASSES)}")
    return name


def resolve_model(name: str) -> str:
    """A hub id or local dir as given; `tiny-*` names are built on first use into the cache; a
    plug-in's model name (`toy-shapes`) is where the plug-in says."""
    if name in TINY_MODELS:
        from . import tiny  # on use: building a twin imports torch, diffusers, transformers and open_clip

        return str(tiny.ensure_tiny(TINY_MODELS[name]))
    if (named := plugins.model(name)) is not None:
        return plugins.load(named.location)()
    return name
