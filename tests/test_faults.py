"""Faults at scale on real Ray: killed actors lose nothing, and an output that fails mid-run leaves
no partial file and a rerun completes. Each run ends with exactly one copy of every sample,
byte-identical to an uninterrupted run of the same command."""

import os
import signal
import subprocess
import threading
import time

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from dnp_batch.config import load_config
from dnp_batch.dag import run_ray
from dnp_batch.job import run, run_local
from dnp_batch.prompts import expand_samples, read_prompts
from jobutil import FAST, PROMPTS, read_run, run_job

pytestmark = pytest.mark.slow

SETS = ["output.samples_per_shard=1", "steps=12", "seeds=3"]


def pngs(out) -> dict[str, bytes]:
    return {key: files["png"] for key, files in read_run(out).items()}


def worker_pids(title: str) -> list[int]:
    """PIDs of Ray worker processes whose title names the stage (e.g. `Map(GenerationStage)`)."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in ps.splitlines() if title in line and "ray::" in line]


def kill_when(out, shards: int, title: str, killed: list) -> None:
    """Once `shards` shards are in `out`, SIGKILL the stage's Ray worker (in the middle of a shard)."""
    deadline = time.time() + 240
    while time.time() < deadline:
        if len(list(out.glob("shard-*.tar"))) >= shards and worker_pids(title):
            for pid in worker_pids(title):
                os.kill(pid, signal.SIGKILL)
                killed.append((title, pid))
            return
        time.sleep(0.05)


def test_killed_generation_and_scoring_actors_lose_nothing(ray_env, tmp_path, monkeypatch):
    for key, value in ray_env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(FAST, sets=SETS)
    samples = expand_samples(read_prompts(PROMPTS), cfg.seeds)
    run(cfg, samples, str(tmp_path / "whole"), run_local)

    out = tmp_path / "ray"
    out.mkdir()
    killed: list = []
    killers = [threading.Thread(target=kill_when, args=(out, 2, "Map(GenerationStage)", killed)),
               threading.Thread(target=kill_when, args=(out, 5, "Map(ScoringStage)", killed))]
    for t in killers:
        t.start()
    try:
        summary = run(cfg, samples, str(out), run_ray)
    finally:
        for t in killers:
            t.join()
    assert {title for title, _ in killed} == {"Map(GenerationStage)", "Map(ScoringStage)"}, killed
    assert summary.failed == 0
    assert pngs(out) == pngs(tmp_path / "whole") and len(pngs(out)) == 12  # one copy each, same bytes


class FailingMemoryFS(MemoryFileSystem):
    """memory:// that starts refusing writes after `budget` file opens for writing (a full disk)."""

    protocol = ("failmem",)
    budget = None

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(str(path).removeprefix("failmem://"))

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode and FailingMemoryFS.budget is not None:
            if FailingMemoryFS.budget <= 0:
                raise OSError(28, "No space left on device", path)
            FailingMemoryFS.budget -= 1
        return super()._open(path, mode, **kwargs)


def test_output_that_fails_mid_run_leaves_no_partial_file_and_the_rerun_completes(tmp_path, capsys):
    fsspec.register_implementation("failmem", FailingMemoryFS, clobber=True)
    fs = fsspec.filesystem("memory")
    args = ["--prompts", PROMPTS, "--config", FAST, "--samples-per-shard", 1, "--set", "steps=2"]
    try:
        FailingMemoryFS.budget = 6  # the probe, the manifest, then two shards (index + tar each)
        assert run_job(*args, "--out", "failmem://full/run") == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: writing to --out failmem://full/run failed") and "No space left" in err
        assert "rerun the same command" in err
        names = [p.rsplit("/", 1)[-1] for p in fs.find("/full/run")]
        finals = [n for n in names if n.startswith("shard-") and n.endswith(".tar")]
        assert 1 <= len(finals) < 4
        for path in fs.find("/full/run"):
            if path.endswith(".tar") and "/_tmp/" not in path:
                assert fs.cat_file(path)[257:262] == b"ustar"  # whatever has a final name is a whole tar
        FailingMemoryFS.budget = None  # space again: the same command resumes and completes
        assert run_job(*args, "--out", "failmem://full/run") == 0
        assert "resuming" in capsys.readouterr().err
        assert len([p for p in fs.find("/full/run") if p.endswith(".tar") and "/_tmp/" not in p]) == 4
    finally:
        FailingMemoryFS.budget = None
        if fs.exists("/full"):
            fs.rm("/full", recursive=True)


def _ppid(pid: int) -> int:
    return int(subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True).stdout.split()[0])


def test_a_worker_node_removed_mid_job_loses_nothing(ray_env, tmp_path, monkeypatch):
    """The node running the generation actor goes away (a preempted node): Ray restarts the actor on
    the other node and the job ends with every sample once, with the uninterrupted run's bytes."""
    import ray
    from ray.cluster_utils import Cluster

    for key, value in ray_env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(FAST, sets=SETS + ["clip.model=null"])
    samples = expand_samples(read_prompts(PROMPTS), cfg.seeds)
    run(cfg, samples, str(tmp_path / "whole"), run_local)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    out = tmp_path / "ray"
    out.mkdir()
    removed = []

    def remove_generation_node():
        deadline = time.time() + 240
        while time.time() < deadline:
            pids = worker_pids("Map(GenerationStage)")
            if len(list(out.glob("shard-*.tar"))) >= 2 and pids:
                raylet = _ppid(pids[0])  # a worker process is its node's raylet's child
                for node in workers:
                    if raylet in [info.process.pid for infos in node.all_processes.values() for info in infos]:
                        cluster.remove_node(node, allow_graceful=False)
                        removed.append(node)
                        return
            time.sleep(0.05)

    try:
        ray.init(address=cluster.address)
        killer = threading.Thread(target=remove_generation_node)
        killer.start()
        summary = run(cfg, samples, str(out), run_ray)
        killer.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(removed) == 1, "the generation actor's node should have been removed mid-job"
    assert summary.failed == 0 and pngs(out) == pngs(tmp_path / "whole")


def test_a_stopped_submitted_job_rerun_resumes_to_the_same_bytes(live_head, tmp_path):
    """`ray job stop` of a submitted job mid-run, then the same `ray job submit` again: it resumes and
    ends with every sample once, with an uninterrupted run's bytes."""
    import sys
    from pathlib import Path

    from jobutil import JOB

    env, address = live_head
    ray_cli = str(Path(sys.executable).parent / "ray")
    whole, out = tmp_path / "whole", tmp_path / "out"
    args = ["--prompts", str(PROMPTS), "--config", str(FAST), "--out"]
    sets = [a for s in SETS for a in ("--set", s)]
    assert run_job(*args, whole, *sets) == 0

    submit = [ray_cli, "job", "submit", "--address", address]
    job = subprocess.run([*submit, "--no-wait", "--", "python", str(JOB), *args, str(out), *sets],
                         env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr[-2000:]
    job_id = next(w for w in job.stdout.split() if w.startswith("raysubmit_")).strip("'\".,")
    deadline = time.time() + 240
    while len(list(out.glob("shard-*.tar"))) < 3 and time.time() < deadline:
        time.sleep(0.1)
    subprocess.run([ray_cli, "job", "stop", "--address", address, job_id], env=env, capture_output=True, timeout=120)
    written = len(list(out.glob("shard-*.tar")))
    assert 3 <= written < 12, "the job should have been stopped part-way"
    rerun = subprocess.run([*submit, "--", "python", str(JOB), *args, str(out), *sets], env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resuming" in rerun.stdout + rerun.stderr
    assert pngs(out) == pngs(whole) and len(pngs(out)) == 12
