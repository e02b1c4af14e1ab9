"""Plug-ins: model names (with the config values a job on them takes), captioners and scorers that a
package adds to dnp_batch's registries, found through the `dnp_batch.plugins` entry-point group
(importlib.metadata), so that the core imports nothing from them. The toy world is one
(`dnp_batch/toyworld/plugin.py`, declared in pyproject.toml):

    [project.entry-points."dnp_batch.plugins"]
    toyworld = "dnp_batch.toyworld.plugin:PLUGIN"

A plug-in module defines a `Plugin` and imports nothing heavy: reading a config reads the plug-ins,
and what they add is named as "module:attribute", imported where it is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points

GROUP = "dnp_batch.plugins"


@dataclass(frozen=True)
class ModelName:
    """A model name a config may give besides a hub id or a directory."""

    location: str  # "module:function": () -> the model's local directory (or a one-line ValueError)
    defaults: dict = field(default_factory=dict)  # config values a job on it takes unless it sets them
    scores: tuple[str, ...] = ()  # scores its records carry by default, besides clip


@dataclass(frozen=True)
class Plugin:
    name: str
    models: dict[str, ModelName] = field(default_factory=dict)
    captioners: dict[str, str] = field(default_factory=dict)  # name -> "module:Class" (built with no arguments)
    scorers: tuple = ()  # dnp_batch.scorers.ScorerSpec entries


def load(ref: str):
    """`"module:attribute"` -> that object (imported now)."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


@cache
def installed() -> tuple[Plugin, ...]:
    """Every installed plug-in, by entry-point name."""
    return tuple(ep.load() for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name))


def model(name: str) -> ModelName | None:
    """The plug-in model called `name`, if one is."""
    return next((p.models[name] for p in installed() if name in p.models), None)


def captioner(name: str) -> str | None:
    """The "module:Class" of the plug-in captioner called `name`, if one is."""
    return next((p.captioners[name] for p in installed() if name in p.captioners), None)


def scorer_specs() -> list:
    return [spec for p in installed() for spec in p.scorers]
