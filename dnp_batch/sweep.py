"""Ablation sweeps: a grid (and/or a list) of grid points over one base config.

A sweep file (YAML):

    name: tiny                       # optional; default: the file's stem
    config: ../tiny-sd.yaml          # optional base config file, relative to the sweep file
    set: {steps: 4}                  # optional overrides of the base (dotted keys allowed)
    seeds: 2                         # a count or a list, as in the job config
    baseline: method-cfg             # optional: the point others are compared with (default: the first)
    grid:                            # cartesian product over these axes
      method: [cfg, answer]
      guidance_scale: [3.0, 7.0]
    points:                          # and/or explicit points, each with an optional name
      - {name: auto-dnp, method: auto-dnp}

Every point shares the prompts and seeds; each lands in OUT/points/NAME, a run directory of its own.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from . import methods
from .config import JobConfig, load_config, read_yaml_mapping

AXES = (
    "method", "guidance_scale", "dns_guidance_scale", "guidance_rescale", "norm_rescale", "scheduler", "steps",
    *methods.setting_axes(), "model",
)
SWEEP_KEYS = ("name", "config", "set", "seeds", "baseline", "grid", "points")


def point_name(overrides: dict) -> str:
    """A readable directory name from a point's overrides, e.g. `method-answer_answer.k-3`."""
    name = "_".join(f"{key}-{value}" for key, value in overrides.items()) or "base"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _check_axes(where: str, mapping: dict) -> None:
    unknown = [key for key in mapping if key not in AXES]
    if unknown:
        raise ValueError(f"{where}: unknown sweep axis {unknown[0]!r}; sweepable: {', '.join(AXES)}")


def load_sweep(path: str | Path) -> tuple[str, str, list[tuple[str, JobConfig, dict]]]:
    """(sweep name, baseline point name, [(point name, config, overrides)]) from a sweep file."""
    path = Path(path)
    spec = read_yaml_mapping(path, "sweep file")
    unknown = [key for key in spec if key not in SWEEP_KEYS]
    if unknown:
        raise ValueError(f"sweep file {path}: unknown key {unknown[0]!r}; known: {', '.join(SWEEP_KEYS)}")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise ValueError(f"sweep file {path}: grid must map axes to lists of values")
    _check_axes(f"sweep file {path} grid", grid)
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep file {path}: grid axis {axis!r} needs a non-empty list of values")
    overrides = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else []
    names = [point_name(o) for o in overrides]
    for n, point in enumerate(spec.get("points") or []):
        if not isinstance(point, dict):
            raise ValueError(f"sweep file {path}: points[{n}] must be a mapping of axis: value")
        point = dict(point)
        name = point.pop("name", None)
        _check_axes(f"sweep file {path} points[{n}]", point)
        overrides.append(point)
        names.append(re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)) if name else point_name(point))
    if not overrides:
        raise ValueError(f"sweep file {path}: the grid is empty and there are no points; nothing to run")
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"sweep file {path}: two points are both named {sorted(duplicates)[0]!r}")

    base = spec.get("config")
    base_path = (path.parent / base) if base else None
    base_sets = [f"{k}={json.dumps(v)}" for k, v in (spec.get("set") or {}).items()]
    points = []
    for name, o in zip(names, overrides):
        sets = base_sets + [f"{k}={json.dumps(v)}" for k, v in o.items()]
        try:
            cfg = load_config(base_path, sets=sets, seeds=spec.get("seeds"))
        except ValueError as e:
            raise ValueError(f"sweep file {path}, point {name!r}: {e}") from None
        points.append((name, cfg, o))
    baseline = spec.get("baseline", names[0])
    if baseline not in names:
        raise ValueError(f"sweep file {path}: baseline {baseline!r} is not a point; points: {', '.join(names)}")
    shared = {(cfg.seeds if isinstance(cfg.seeds, int) else tuple(cfg.seeds)) for _, cfg, _ in points}
    if len(shared) > 1:
        raise ValueError(f"sweep file {path}: every point must use the same seeds")
    return spec.get("name") or path.stem, baseline, points
