"""Load SD/SDXL/SD3 diffusers pipelines from a hub id or a local directory, and swap schedulers."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

import diffusers
import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from packaging.version import Version

from . import families
from .names import SCHEDULER_CLASSES, check_scheduler
from .runtime import quiet_progress_bars, resolve_dtype

# Short names (names.SCHEDULER_CLASSES) -> scheduler classes.
SCHEDULERS = {name: getattr(diffusers, cls) for name, cls in SCHEDULER_CLASSES.items()}

# diffusers 0.42 takes `dtype` and warns on `torch_dtype`; older releases only know `torch_dtype`.
_DTYPE_KWARG = "dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype"


def set_scheduler(pipe: DiffusionPipeline, name: str) -> DiffusionPipeline:
    """Replace `pipe.scheduler` by the scheduler called `name` in `SCHEDULERS`, same config (a
    flow-matching family's pipeline keeps its own: a ValueError)."""
    check_scheduler(name)
    family = families.family_of(pipe)
    if not family.swaps_schedulers:
        raise ValueError(f"scheduler {name!r}: a {family.name} pipeline samples with its own "
                         f"{type(pipe.scheduler).__name__} (flow matching), which none of {', '.join(SCHEDULERS)} "
                         f"replaces; leave `scheduler` unset for it")
    pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config)
    return pipe


def _from_pretrained(source: str, dtype: torch.dtype) -> DiffusionPipeline:
    with quiet_progress_bars():
        return DiffusionPipeline.from_pretrained(source, use_safetensors=True, **{_DTYPE_KWARG: dtype})


def check_pipeline_source(id_or_dir: str | os.PathLike) -> None:
    """Cheap check before any load: an existing local path must be a diffusers pipeline dir whose
    weights are safetensors (pickled `.bin` weights are never loaded: they can run code)."""
    path = Path(id_or_dir).expanduser()
    if not path.exists():
        return
    if not (path / "model_index.json").is_file():
        raise ValueError(
            f"{path} is not a diffusers pipeline directory (no model_index.json); "
            "build a tiny one with `python -m dnp_batch.tiny --kind sdxl --out DIR`"
        )
    for component in sorted(p for p in path.iterdir() if p.is_dir()):
        if any(component.glob("*.bin")) and not any(component.glob("*.safetensors")):
            raise ValueError(
                f"{component} holds only pickled .bin weights; dnp_batch loads safetensors only (a pickle can "
                "run code): convert them, e.g. load once where you trust the file and save_pretrained(..., "
                "safe_serialization=True)"
            )


DIGEST_LIMIT = 2 * 1024**3  # local model dirs up to this size get a content digest in every record


def model_digest(source: str) -> str | None:
    """A local model directory's content digest (sha256 over every file's relative path and bytes,
    in path order), so a record names exactly the weights that made it; None for a hub id or a dir
    over `DIGEST_LIMIT` (its hub revision or path stands for it)."""
    path = Path(source)
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if sum(p.stat().st_size for p in files) > DIGEST_LIMIT:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers, for records and manifests."""
    names = ("dnp_batch", "torch", "diffusers", "transformers", "open_clip_torch", "ray")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def model_revision(source: str) -> str | None:
    """The hub snapshot (commit hash) a loaded model came from, when its path shows one."""
    parts = Path(source).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def load_vae(id_or_dir: str | os.PathLike, dtype: torch.dtype | str = torch.float32) -> AutoencoderKL:
    """A replacement VAE (safetensors only): a local dir with config.json, or a hub id, e.g.
    madebyollin/sdxl-vae-fp16-fix, whose config turns off SDXL's fp32 decode upcast."""
    path = Path(id_or_dir).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise ValueError(f"vae {path} is not a diffusers AutoencoderKL directory (no config.json)")
    try:
        with quiet_progress_bars():
            return AutoencoderKL.from_pretrained(str(path) if path.exists() else str(id_or_dir),
                                                 use_safetensors=True, **{_DTYPE_KWARG: resolve_dtype(dtype)})
    except Exception as err:  # hub/network/format errors come in many types; name the source once
        raise ValueError(f"vae {str(id_or_dir)!r} could not be loaded as an AutoencoderKL: {err}") from err


def load_pipeline(
    id_or_dir: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    scheduler: str | None = None,
    vae: str | os.PathLike | None = None,
    compile_unet: bool = False,
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """Load an SD, SDXL or SD3 pipeline (safetensors only) onto `device`, optionally swapping its scheduler
    and its VAE (`vae`: see load_vae) and compiling its UNet in place (`torch.compile`, default mode:
    bench/gpu.py measured ~1.1x images/s for SDXL on an H200; the first call pays the compile)."""
    torch_dtype = resolve_dtype(dtype)
    check_scheduler(scheduler)  # fail before a slow load
    path = Path(id_or_dir).expanduser()
    if path.exists():
        check_pipeline_source(path)
        source = str(path)
        pipe = _from_pretrained(source, torch_dtype)
    else:
        source = str(id_or_dir)
        try:
            pipe = _from_pretrained(source, torch_dtype)
        except Exception as err:  # hub/network errors come in many types; name the id once
            raise ValueError(
                f"{source!r} is neither a local directory nor a loadable diffusers pipeline id: {err}"
            ) from err
    if not isinstance(pipe, families.PIPELINES):
        if families.guidance_distilled(pipe):
            raise ValueError(families.unsupported(pipe, source))
        raise ValueError(f"{source} holds a {type(pipe).__name__}; only {families.pipeline_names(' and ')} "
                         "(and subclasses) are supported")
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    if vae is not None:
        pipe.vae = load_vae(vae, torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    if compile_unet:
        families.network(pipe).compile()  # the UNet, or a transformer family's transformer
    return pipe
