"""Replaying a main chain through a fresh scheduler: the check, shared by every family's tests, that
ANSWER's mini-chain leaves the main chain's scheduler alone."""

import copy

import torch

from dnp_batch import families, sampler


def scheduler_state(scheduler) -> dict:
    """Everything a scheduler carries from step to step (step index, multistep history, sigmas, ...)."""
    return {k: copy.deepcopy(v) for k, v in vars(scheduler).items()
            if not k.startswith("_") or k in ("_step_index", "_begin_index")}


def assert_same(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    else:
        assert a == b, path


def replay_main_chain(pipe, seen, seeds, steps: int, size: int) -> None:
    """`seen`: (guided prediction, latents, scheduler state) after each main step, from a run's
    callback. Steps a fresh scheduler of the same config with those predictions, as the pipeline
    sets it up, and asserts the latents and the whole state match after every step."""
    fresh = type(pipe.scheduler).from_config(pipe.scheduler.config)
    families.set_timesteps(pipe, fresh, steps, size, size)
    if hasattr(fresh, "set_begin_index"):
        fresh.set_begin_index(0)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    z = families.initial_latents(pipe, fresh, gens, size, size, torch.float32)
    kwargs = sampler.step_kwargs(fresh, gens)
    for i, t in enumerate(fresh.timesteps):
        eps, z_seen, state_seen = seen[i]
        if hasattr(fresh, "scale_model_input"):
            fresh.scale_model_input(z, t)
        z = fresh.step(eps, t, z, **kwargs, return_dict=False)[0]
        assert torch.equal(z, z_seen), f"latents differ after step {i}"
        assert_same(scheduler_state(fresh), state_seen, f"step {i}")
