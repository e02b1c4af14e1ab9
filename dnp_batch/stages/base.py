"""The stages' shared wiring: a stage is a plain callable class over one shard row at a time.

`Stage(cfgs)(row) -> row`. A stage serves the configs of every grid point of a job (one for a plain
run) and every row brings its own config. A batch that raises is retried sample by sample; a sample
that still fails is marked failed (with its error) and skipped by later stages, and the rest of the
shard goes on.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from typing import TYPE_CHECKING, Callable

import torch

from .. import rows

if TYPE_CHECKING:
    from ..config import JobConfig
    from ..prompts import Sample


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def local_placement() -> dict:
    """Where a stage runs when no distributor says: this host, and the GPUs CUDA_VISIBLE_DEVICES
    leaves visible to the process (none when unset or empty)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return {"node": socket.gethostname(), "pid": os.getpid(), "gpu_ids": [g for g in visible.split(",") if g.strip()]}


def _failure(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def run_isolated(batch_size: int, samples: list[Sample], items: list[dict],
                 fn: Callable[[list[Sample], list[dict]], None], method: str) -> None:
    """Apply `fn` to the pending samples in fixed batches; a failing batch is retried sample by
    sample, and a sample that fails alone gets its error recorded in its item."""
    pending = [j for j, item in enumerate(items) if not item.get("error")]
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        try:
            fn([samples[j] for j in chunk], [items[j] for j in chunk])
        except Exception:  # noqa: BLE001 - isolate the sample that fails, keep the rest of the shard
            for j in chunk:
                try:
                    fn([samples[j]], [items[j]])
                except Exception as err:  # noqa: BLE001
                    items[j]["error"] = _failure(err)
                    items[j]["record"].update(method=method, status="failed")


class Stage:
    """Shared wiring: the device and placement, the torch threads on CPU, and the row loop
    (`prepare` once per config, then `process` on the shard's samples in isolated batches)."""

    name = "stage"  # in timings and logs

    def __init__(self, cfgs: list[JobConfig], where: Callable[[], dict] = local_placement):
        base = cfgs[0]
        self.device = resolve_device(base.device)
        # Which device and GPU ids this stage's samples come from, as the distributor placed it
        # (dag.ray_placement under Ray). A stage given a GPU by Ray where CUDA is not available
        # (a CPU-only machine, the fake-GPU test cluster) runs on the CPU through this same code.
        self.placement = {"device": self.device, **(where or local_placement)()}
        if self.device == "cpu":
            torch.set_num_threads(base.cpu_threads)

    def applies(self, cfg: JobConfig) -> bool:
        return True

    def __call__(self, row: dict) -> dict:
        t0 = time.perf_counter()
        cfg = rows.config(row)
        samples, items = rows.contents(row)
        if self.applies(cfg):
            self.prepare(cfg)  # a config the models cannot run fails the job, not each sample
            run_isolated(cfg.batch_size, samples, items, lambda s, it: self.process(cfg, s, it), cfg.method)
        return rows.updated(row, samples, items, self.name, time.perf_counter() - t0)

    def prepare(self, cfg: JobConfig) -> None:
        pass

    def process(self, cfg: JobConfig, samples: list[Sample], items: list[dict]) -> None:
        raise NotImplementedError
