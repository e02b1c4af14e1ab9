"""The Ray distributor: the stages as a streaming chain of Ray Data actor pools.

The only module of the package that imports `ray`. Each stage class becomes `Dataset.map` over an
`ActorPoolStrategy` of `actors` actors, each asking for the stage's `num_gpus`/`num_cpus`, so a
model is loaded once per actor. Rows are whole shards, so batches are cut the same way as in
process. Ray Data restarts actors that die (system failures); a sample that raises is handled
inside the stage (marked failed, the shard goes on).
"""

from __future__ import annotations

import os
import secrets
import sys
from functools import partial
from typing import TYPE_CHECKING, Iterator

import numpy as np

# A private instance listens on loopback only. Ray reads this flag once, when `ray` is first
# imported (ray._private.ray_constants.ENABLE_RAY_CLUSTER), and its processes inherit it: set here,
# before the import, unless the job is to join a cluster (RAY_ADDRESS), whose nodes must reach the
# driver. If something imported `ray` before this module, the listeners keep Ray's default
# addresses and the token below is what keeps the instance private.
if "ray" not in sys.modules and not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
import ray.data  # noqa: E402

if TYPE_CHECKING:  # an actor process unpickles `ray_placement` from here: it must not import the stages
    from .config import JobConfig
    from .stages import StageSpec


def make_ray_private() -> None:
    """Set this process's environment for a private local instance, before `ray.init` starts it:
    Ray's own token authentication with a fresh random token (RAY_AUTH_TOKEN, first in Ray's order
    of token sources, so nothing is read from or written to ~/.ray), and loopback listeners. Every
    Ray process of the instance inherits it; only this process (and its children) hold the token.
    RAY_AUTH_MODE is left unset unless it already says `token`: for a new local cluster `ray.init`
    then turns token mode on itself and refreshes the setting it cached when `ray` was imported
    (Ray >= 2.59); a mode set here after that import would not reach this process's own client."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        os.environ.pop("RAY_AUTH_MODE", None)
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    elif not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def init_ray() -> bool:
    """Join the cluster named by RAY_ADDRESS (set under `ray job submit`) with whatever
    authentication that cluster uses (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
    or ~/.ray/auth_token, as Ray reads them), else start a private local instance (see
    `make_ray_private`). Returns whether this call started Ray (and should shut it down)."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return True
    make_ray_private()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True,
             _temp_dir=os.environ.get("RAY_TMPDIR"))
    return True


def _reading(cls: type) -> type:
    """The first stage, reading its own shards: `cls` fed task j's shard row for each shard id, the row
    built in its worker from the ShardTasks put once into the object store (for a PromptSet, by
    reading the shard's rows of the prompts file). No actor of its own for reading, so a job starts
    one process fewer. It keeps the stage's name, so Ray still shows `Map(GenerationStage)`."""

    def __init__(self, cfgs, tasks, where=None):
        cls.__init__(self, cfgs, where=where)
        self._tasks = ray.get(tasks) if isinstance(tasks, ray.ObjectRef) else tasks

    def __call__(self, row: dict) -> dict:
        return cls.__call__(self, self._tasks.row(int(row["id"])))

    return type(cls.__name__, (cls,), {"__init__": __init__, "__call__": __call__, "__module__": __name__,
                                       "__qualname__": f"_reading.<locals>.{cls.__name__}"})


READ_TASKS = 16  # the source's read tasks; each yields its shard ids one block at a time


class _ShardIds(ray.data.Datasource):
    """0..n-1, one id a block (so shards stream one by one), from a few read tasks: the driver plans
    READ_TASKS tasks, not one per shard (`ray.data.range` with one block a shard plans n)."""

    def __init__(self, n: int):
        self.n = n

    def estimate_inmemory_data_size(self) -> int:
        return 8 * self.n

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        import pyarrow as pa
        from ray.data.block import BlockMetadata

        def read(lo: int, hi: int):
            for i in range(lo, hi):
                yield pa.table({"id": [i]})

        bounds = np.linspace(0, self.n, min(self.n, READ_TASKS) + 1).astype(int)
        return [ray.data.ReadTask(partial(read, int(lo), int(hi)),
                                  BlockMetadata(num_rows=int(hi - lo), size_bytes=8 * int(hi - lo), exec_stats=None))
                for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def ray_placement() -> dict:
    """Where Ray placed the calling actor: its node id, process and the GPU ids Ray assigned it (Ray also
    sets CUDA_VISIBLE_DEVICES to them, so `device: cuda` is that GPU). Stages put it in records."""
    return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


def actor_pool(actors) -> "ray.data.ActorPoolStrategy":
    """A fixed pool for a count; Ray Data's autoscaling pool for `{min, max}`."""
    if isinstance(actors, int):
        return ray.data.ActorPoolStrategy(size=actors)
    return ray.data.ActorPoolStrategy(min_size=actors.min, max_size=actors.max)


def build_dataset(specs: list[StageSpec], tasks, cfgs: list[JobConfig]) -> "ray.data.Dataset":
    """shard ids -> each stage's actor pool, the first reading the shard rows; one shard a block, so
    shards stream one by one and the driver holds only the task list (small), never the rows."""
    # the ids' read tasks are trivial: they ask for no CPU, so they never wait behind the stages' actors
    ds = ray.data.read_datasource(_ShardIds(len(tasks)), ray_remote_args={"num_cpus": 0})
    for i, spec in enumerate(specs):
        r = spec.resources
        cls, args = (_reading(spec.cls), (cfgs, ray.put(tasks))) if i == 0 else (spec.cls, (cfgs,))
        if not getattr(spec.cls, "takes_configs", True):
            args = ()  # the writer: unpickling configs would import torch and diffusers into its actor
        ds = ds.map(cls, fn_constructor_args=args, fn_constructor_kwargs={"where": ray_placement},
                    compute=actor_pool(r.actors), num_gpus=r.num_gpus or None, num_cpus=r.num_cpus)
    return ds


def run_ray(specs: list[StageSpec], tasks, cfgs: list[JobConfig]) -> Iterator[dict]:
    """The Ray distributor (same signature as `job.run_local`): yields each shard's last row."""
    if not len(tasks):
        return
    started = init_ray()
    try:
        yield from build_dataset(specs, tasks, cfgs).iter_rows()
    finally:
        if started:
            ray.shutdown()
