"""Every test that runs on real Ray, in this one module.

pyproject's addopts run the suite in two pytest-xdist workers with `--dist loadfile`, so this module
runs in one worker, one test after another, while the rest of the suite is shared out beside it
(conftest.py refuses a test elsewhere that asks for a Ray fixture). Side by side, Ray tests would
break each other: the fault tests find the actors to kill by their process titles, the live head's
`ray stop --force` stops every Ray process of the machine, a test's in-process driver included, and
their jobs would only compete for the same two cores. Start-ups are shared where the tests allow:
one live head for both `ray job submit` tests (last, so that its `ray stop --force` ends the
module), one private instance for the tests that need a plain local Ray, one uninterrupted
reference run for the three fault tests.

- the README quick-start, as a user runs it: its private Ray listens on loopback only, with token
  authentication;
- `ray job submit` to a live head on loopback (auto-DNP's two-stage DAG on tiny SD3.5), and a
  submitted job stopped mid-run then resubmitted: it resumes to the uninterrupted run's bytes;
- the DAG on a simulated three-node cluster (tiny Qwen-Image) gives the in-process run's bytes;
- faults: killed generation and scoring actors, a worker node removed mid-job: every sample once,
  with the uninterrupted run's bytes;
- one model per GPU on Ray's fake GPUs, and an autoscaling pool growing onto a node added mid-job;
- Ray Data reads a job's shards back unchanged; bench/pipeline.py prints its ratios.
"""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray
from PIL import Image
from ray.cluster_utils import Cluster

from dnp_batch.config import load_config
from dnp_batch.dag import run_ray
from dnp_batch.job import run, run_local
from dnp_batch.prompts import PromptSet, expand_samples, read_prompts
from jobutil import (EXAMPLE_KEYS, FAST, JOB, PROMPTS, QWEN, REPO, SD3, ListenerWatch, index, process_tree,
                     processes_under, read_run, records, run_job)

pytestmark = pytest.mark.slow

RAY_CLI = str(Path(sys.executable).parent / "ray")
# The fault tests' job: 12 one-sample shards, so a fault lands between shards while work remains.
SETS = ["output.samples_per_shard=1", "steps=12", "seeds=3"]


def pngs(out) -> dict[str, bytes]:
    return {key: files["png"] for key, files in read_run(out).items()}


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> dict[str, bytes]:
    """The fault tests' job run uninterrupted, in process: the PNG bytes every faulted run must end
    with (CLIP scoring on; the scores do not touch the images, so a run without them compares too)."""
    out = tmp_path_factory.mktemp("whole") / "out"
    assert run_job("--prompts", PROMPTS, "--config", FAST, *[a for s in SETS for a in ("--set", s)], "--out", out) == 0
    images = pngs(out)
    assert len(images) == 12
    return images


@pytest.fixture(scope="module")
def env_for_ray(ray_env):
    """This process's environment set to the suite's private-Ray settings (conftest.ray_env) for the
    module, since `run_ray` and `ray.init` read it."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ray_env.items():
            mp.setenv(key, value)
        yield ray_env


# --- the quick-start --------------------------------------------------------------------------------


def test_readme_quickstart_command_runs_on_local_ray(tmp_path, ray_env):
    """The README's main-job command, as a user runs it: built-in defaults (the trained toy-shapes
    model, its study's CFG, judged and CLIP-scored), embedded local Ray, which is private: while the
    job runs, every socket its process tree listens on is on loopback, its GCS runs with Ray's token
    authentication, and nothing is written to ~/.ray. The environment is the user's (none of the
    test suite's own Ray settings), with a fresh home directory."""
    out = tmp_path / "out"
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in ray_env.items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["HOME"] = str(home)
    proc = psutil.Popen(
        [sys.executable, "jobs/generate.py", "--prompts", "examples/prompts.jsonl", "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    with ListenerWatch(process_tree(proc)) as watch:
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert watch.listeners and any(name == "gcs_server" for _, _, name in watch.listeners), watch.listeners
    assert watch.non_loopback() == []
    assert watch.gcs_env and all(e == {"RAY_AUTH_MODE": "token", "token": True} for e in watch.gcs_env.values())
    assert not (home / ".ray").exists()
    samples = read_run(out)
    assert sorted(samples) == ["circle_0", "crosses_0", "square-triangle_0", "triangle-square_0"]
    for key, files in samples.items():
        assert sorted(files) == ["json", "png", "txt"]
        record = json.loads(files["json"])
        assert record["id"] == key and record["method"] == "cfg" and record["model"] == "toy-shapes"
        # the toy world's defaults by its study's rule (toyworld/plugin.py TOY_DEFAULTS): CFG, w = 2, 20 steps
        assert record["nfe"] == 40 and record["num_inference_steps"] == 20 and record["guidance_scale"] == 2.0
        assert record["clip_score"] >= 0 and record["clip_model"] == "tiny-clip"
        assert set(record["judge"]) == {"shape", "colour", "count", "relation", "all"}
        assert record["versions"]["torch"] and record["versions"]["diffusers"] and record["status"] == "ok"
        assert files["txt"].decode() == record["prompt"]
        assert Image.open(io.BytesIO(files["png"])).size == (32, 32)
    assert sorted(r["key"] for r in index(out)) == sorted(samples)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["ok"] == 4
    assert "cfg: 4 samples (0 failed) in 1 shards" in stdout and "samples/s" in stdout
    assert "mean CLIP score (cfg)" in stdout
    assert "shard 00000 written" in stderr  # progress while it runs


# --- simulated clusters -----------------------------------------------------------------------------


def test_dag_on_a_three_node_cluster_gives_the_in_process_bytes(env_for_ray, tmp_path):
    """auto-DNP's two-stage DAG on the tiny Qwen-Image, two generation actors, on a head and two
    worker nodes, its prompts streamed from the file (PromptSet) against the in-process run from
    samples held in memory."""
    cfg = load_config(QWEN, method="auto-dnp", sets=["stages.generate.actors=2", "output.samples_per_shard=1"])
    samples = expand_samples(read_prompts(PROMPTS), 1)
    run(cfg, samples, str(tmp_path / "local"), run_local)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3
        with ListenerWatch(process_tree(psutil.Process())) as watch:  # the simulated nodes are our children
            summary = run(cfg, PromptSet(PROMPTS, 1), str(tmp_path / "ray"), run_ray)  # streamed: workers read shards
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len([l for l in watch.listeners if l[2] == "gcs_server"]) >= 1 and watch.non_loopback() == []
    assert watch.gcs_env and all(e == {"RAY_AUTH_MODE": "token", "token": True} for e in watch.gcs_env.values())
    assert summary.samples == 4 and summary.failed == 0
    local, distributed = read_run(tmp_path / "local"), read_run(tmp_path / "ray")
    assert sorted(distributed) == EXAMPLE_KEYS
    for key in EXAMPLE_KEYS:
        assert distributed[key]["png"] == local[key]["png"]
        assert distributed[key]["dns.png"] == local[key]["dns.png"]
        assert json.loads(distributed[key]["json"])["family"] == "qwenimage"


def worker_pids(title: str) -> list[int]:
    """PIDs of this process's Ray worker descendants whose title names the stage (e.g.
    `Map(GenerationStage)`): the private instance's and the simulated nodes' processes are ours."""
    out = []
    for p in process_tree(psutil.Process())():
        try:
            if title in " ".join(p.cmdline()) and "ray::" in " ".join(p.cmdline()):
                out.append(p.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return out


def test_a_worker_node_removed_mid_job_loses_nothing(env_for_ray, whole, tmp_path):
    """The node running the generation actor goes away (a preempted node): Ray restarts the actor on
    the other node and the job ends with every sample once, with the uninterrupted run's bytes."""
    cfg = load_config(FAST, sets=SETS + ["clip.model=null"])
    samples = expand_samples(read_prompts(PROMPTS), cfg.seeds)
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
                raylet = psutil.Process(pids[0]).ppid()  # a worker process is its node's raylet's child
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
    assert summary.failed == 0 and pngs(out) == whole


def _by_actor(recs, stage):
    """{(node, pid): gpu_ids} of the actors of `stage` that made these records."""
    out = {}
    for rec in recs:
        p = rec["placement"][stage]
        assert p["device"] == "cpu"  # no CUDA here: the CPU fallback of device auto
        out.setdefault((p["node"], p["pid"]), set()).add(tuple(p["gpu_ids"]))
    assert all(len(ids) == 1 for ids in out.values()), out  # an actor keeps its GPU
    return {actor: next(iter(ids)) for actor, ids in out.items()}


def test_an_autoscaling_pool_grows_onto_a_gpu_node_added_mid_job(env_for_ray, tmp_path):
    """`actors: {min: 1, max: 3}` is Ray Data's autoscaling pool: it starts one generation actor on
    the one GPU there is, and takes the GPUs of a node that joins while shards are still queued."""
    cfg = load_config(FAST, method="cfg", sets=[
        "steps=80", "stages.generate.actors={min: 1, max: 3}", "stages.generate.num_gpus=1",
        "stages.generate.num_cpus=0.25", "scores=[]", "stages.write.num_cpus=0.25", "output.samples_per_shard=1"])
    # 48 one-sample shards at 80 steps (~50 s of work for one actor here): enough left when the node
    # joins for its actors to take some even beside the other pytest-xdist worker. At 40 steps they
    # took 12 and 15 of 48 alone, but none in a clean-clone suite run, where the work ran out first.
    samples = expand_samples(read_prompts(PROMPTS), 12)
    out = tmp_path / "out"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    result, added = {}, False

    def job():
        try:
            result["summary"] = run(cfg, samples, str(out), run_ray)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = exc

    try:
        ray.init(address=cluster.address)
        thread = threading.Thread(target=job, daemon=True)
        thread.start()
        deadline = time.monotonic() + 300
        while thread.is_alive() and time.monotonic() < deadline and not list(out.glob("index/shard-*.parquet")):
            time.sleep(0.2)
        if thread.is_alive():  # Ray's node start-up must run in the main thread
            cluster.add_node(num_cpus=1, num_gpus=2)
            added = True
        thread.join(timeout=600)
    finally:
        ray.shutdown()
        cluster.shutdown()
    if "error" in result:
        raise result["error"]
    summary = result["summary"]
    assert added and summary.samples == 48 and summary.failed == 0
    generate = _by_actor(records(out).values(), "generate")
    nodes = {node for node, _ in generate}
    assert len(generate) >= 2 and len(nodes) == 2, generate  # grew onto the new node's GPUs
    assert len(set(generate.items())) == len(generate)


# --- one private local instance, shared -------------------------------------------------------------


class TestOnOnePrivateInstance:
    """The tests that need a plain local Ray share one private instance (on loopback, with the
    suite's token), with 5 of Ray's fake GPUs for the placement test; `run_ray` joins it."""

    @pytest.fixture(scope="class", autouse=True)
    def private_ray(self, env_for_ray):
        ray.init(address="local", num_cpus=2, num_gpus=5, include_dashboard=False, _temp_dir=env_for_ray["RAY_TMPDIR"])
        yield
        ray.shutdown()

    @pytest.fixture(scope="class")
    def placed(self, private_ray, tmp_path_factory):
        """A job of 16 one-sample shards with four generation actors of one fake GPU each and two
        scorer actors of a quarter GPU each."""
        cfg = load_config(FAST, method="cfg", sets=[
            "steps=2", "stages.generate.actors=4", "stages.generate.num_gpus=1", "stages.generate.num_cpus=0.25",
            "stages.score.actors=2", "stages.score.num_gpus=0.25", "stages.score.num_cpus=0.25",
            "stages.write.num_cpus=0.25", "output.samples_per_shard=1"])
        samples = expand_samples(read_prompts(PROMPTS), 4)  # 16 one-sample shards
        out = tmp_path_factory.mktemp("placed") / "out"
        return run(cfg, samples, str(out), run_ray), out

    def test_each_generation_actor_pins_its_own_gpu_and_scorers_share_one(self, placed):
        """One model per GPU, checked on Ray's fake GPUs: Ray schedules `num_gpus` on a CPU machine as
        on a GPU cluster and tells each actor its GPU ids; the stages run on the CPU through the same
        code a GPU run takes (device `auto` resolves to cpu) and record where each sample was made."""
        summary, out = placed
        assert summary.samples == 16 and summary.failed == 0
        recs = list(records(out).values())
        generate, score = _by_actor(recs, "generate"), _by_actor(recs, "score")
        gen_ids = list(generate.values())
        assert all(len(ids) == 1 for ids in gen_ids) and len(set(gen_ids)) == len(gen_ids), generate  # one each
        assert len(generate) >= 2, generate  # the work was spread, so the ids above were compared
        score_ids = set(score.values())
        assert len(score_ids) == 1 and len(next(iter(score_ids))) == 1, score  # 0.25 + 0.25: one shared GPU
        assert not score_ids & set(gen_ids)  # whole GPUs are not shared

    def test_ray_data_reads_every_sample_unchanged(self, placed):
        _, out = placed
        tars = sorted(str(p) for p in out.glob("shard-*.tar"))
        rows = ray.data.read_webdataset(tars, decoder=None).take_all()
        expected = read_run(out)
        assert len(rows) == 16 and sorted(r["__key__"] for r in rows) == sorted(expected)
        for row in rows:
            files = expected[row["__key__"]]
            assert row["png"] == files["png"] and row["json"] == files["json"]

    def test_killed_generation_and_scoring_actors_lose_nothing(self, whole, tmp_path):
        cfg = load_config(FAST, sets=SETS)
        samples = expand_samples(read_prompts(PROMPTS), cfg.seeds)
        out = tmp_path / "ray"
        out.mkdir()
        killed: list = []

        def kill_when(shards: int, title: str) -> None:
            """Once `shards` shards are in `out`, SIGKILL the stage's Ray worker (in the middle of a shard)."""
            deadline = time.time() + 240
            while time.time() < deadline:
                if len(list(out.glob("shard-*.tar"))) >= shards and worker_pids(title):
                    for pid in worker_pids(title):
                        os.kill(pid, signal.SIGKILL)
                        killed.append((title, pid))
                    return
                time.sleep(0.05)

        killers = [threading.Thread(target=kill_when, args=(2, "Map(GenerationStage)")),
                   threading.Thread(target=kill_when, args=(5, "Map(ScoringStage)"))]
        for t in killers:
            t.start()
        try:
            summary = run(cfg, samples, str(out), run_ray)
        finally:
            for t in killers:
                t.join()
        assert {title for title, _ in killed} == {"Map(GenerationStage)", "Map(ScoringStage)"}, killed
        assert summary.failed == 0
        assert pngs(out) == whole  # one copy each, same bytes


# --- the pipeline bench -----------------------------------------------------------------------------


def test_pipeline_bench_prints_throughput_and_memory_ratios(ray_env):
    """bench/pipeline.py on the tiny model (the medium one costs the same code and 15 s more): the
    Ray job against the bare loop, and the driver's memory streaming 200 and 2,000 prompts."""
    import re

    proc = subprocess.run([sys.executable, "bench/pipeline.py", "--samples", "4", "--prompt-counts", "200,2000",
                           "--per-shard", "1000", "--repeats", "1", "--models", "tiny"],
                          cwd=REPO, env=ray_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # "ratio  MODEL  NAME  MEDIAN  (min A, max B)" for throughput, "ratio  memory HI/LO  VALUE" for memory
    ratios = {m[1]: float(m[2]) for m in (re.match(r"ratio\s+(.+?)\s+([0-9.]+)(?:\s+\(min .*\))?$", line)
                                          for line in lines) if m}
    assert "(min " in next(line for line in lines if line.startswith("ratio  tiny  ray_job/bare "))
    assert {"tiny  ray_job/bare", "tiny  ray_stage_generate/bare_batched", "memory 2000/200"} <= set(ratios), \
        proc.stdout
    assert all(value > 0 for value in ratios.values()), ratios
    assert next(line for line in lines if line.startswith("config  tiny")).split()[7:9] == ["size", "native"]
    rates = [line.split() for line in lines if line.startswith("throughput")]
    assert {(r[1], r[2]) for r in rates} >= {("tiny", "ray_job"), ("tiny", "bare_diffusers")}
    assert all(float(r[3]) > 0 for r in rates)
    peaks = [line.split() for line in lines if line.startswith("memory")]
    assert [p[1] for p in peaks] == ["200", "2000"]
    assert all(float(p[p.index("peak_rss_mb") + 1]) > 0 for p in peaks)


# --- a live head: `ray job submit` ------------------------------------------------------------------


def test_ray_job_submit_runs_the_job_on_a_live_cluster(live_head, tmp_path):
    """`ray job submit` to a `ray start --head` cluster with token auth (the suite's token, as a
    user's cluster would have its own), of auto-DNP's two-stage DAG on the tiny SD3.5 (a flow-matching
    transformer; the tiny Qwen-Image runs it in the three-node test): the job joins it and
    authenticates; every socket of that cluster's processes, the job's driver included, is on
    loopback, and its GCS checks the token."""
    env, address = live_head
    out = tmp_path / "out"
    with ListenerWatch(processes_under(env["RAY_TMPDIR"])) as watch:  # auto-DNP's two stages, on tiny SD3.5
        proc = subprocess.run(
            [RAY_CLI, "job", "submit", "--address", address, "--",
             "python", str(JOB), "--prompts", str(PROMPTS), "--config", str(SD3), "--method", "auto-dnp",
             "--set", "steps=3", "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any(name == "gcs_server" for _, _, name in watch.listeners) and watch.non_loopback() == []
    assert watch.gcs_env and all(e == {"RAY_AUTH_MODE": "token", "token": True} for e in watch.gcs_env.values())
    unauthenticated = subprocess.run([RAY_CLI, "job", "list", "--address", address], capture_output=True, text=True,
                                     env={**{k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"},
                                          "RAY_AUTH_MODE": "disabled"}, timeout=120)
    assert unauthenticated.returncode != 0, unauthenticated.stdout  # a client without the token is refused
    assert "auto-dnp: 4 samples (0 failed) in 1 shards" in proc.stdout
    samples = read_run(out)
    assert sorted(samples) == EXAMPLE_KEYS and all("png" in f and "dns.png" in f for f in samples.values())
    assert all(json.loads(f["json"])["family"] == "sd3" for f in samples.values())


def test_a_stopped_submitted_job_rerun_resumes_to_the_same_bytes(live_head, whole, tmp_path):
    """`ray job stop` of a submitted job mid-run, then the same `ray job submit` again: it resumes and
    ends with every sample once, with an uninterrupted run's bytes."""
    env, address = live_head
    out = tmp_path / "out"
    args = ["--prompts", str(PROMPTS), "--config", str(FAST), "--out", str(out)]
    sets = [a for s in SETS for a in ("--set", s)]
    submit = [RAY_CLI, "job", "submit", "--address", address]
    job = subprocess.run([*submit, "--no-wait", "--", "python", str(JOB), *args, *sets],
                         env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr[-2000:]
    job_id = next(w for w in job.stdout.split() if w.startswith("raysubmit_")).strip("'\".,")
    deadline = time.time() + 240
    while len(list(out.glob("shard-*.tar"))) < 3 and time.time() < deadline:
        time.sleep(0.1)
    subprocess.run([RAY_CLI, "job", "stop", "--address", address, job_id], env=env, capture_output=True, timeout=120)
    written = len(list(out.glob("shard-*.tar")))
    assert 3 <= written < 12, "the job should have been stopped part-way"
    rerun = subprocess.run([*submit, "--", "python", str(JOB), *args, *sets], env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resuming" in rerun.stdout + rerun.stderr
    assert pngs(out) == whole
