"""The job on real Ray clusters: `ray job submit` to a live head on loopback (tiny SD3.5), and the
DAG on a simulated three-node cluster (tiny Qwen-Image), which must give the in-process run's
bytes. (The SD and SDXL UNet families run on Ray in the quick-start, fault and placement tests.)"""

import json
import subprocess
import sys
from pathlib import Path

import psutil
import ray
from ray.cluster_utils import Cluster

from dnp_batch.config import load_config
from dnp_batch.dag import run_ray
from dnp_batch.job import run, run_local
from dnp_batch.prompts import PromptSet, expand_samples, read_prompts
from jobutil import EXAMPLE_KEYS, JOB, PROMPTS, QWEN, SD3, ListenerWatch, process_tree, processes_under, read_run


def test_ray_job_submit_runs_the_job_on_a_live_cluster(live_head, tmp_path):
    """`ray job submit` to a `ray start --head` cluster with token auth (the suite's token, as a
    user's cluster would have its own), of auto-DNP's two-stage DAG on the tiny SD3.5 (a flow-matching
    transformer; the tiny SD runs it in the three-node test below): the job joins it and authenticates; every socket of that
    cluster's processes, the job's driver included, is on loopback, and its GCS checks the token."""
    env, address = live_head
    out = tmp_path / "out"
    ray_cli = str(Path(sys.executable).parent / "ray")
    with ListenerWatch(processes_under(env["RAY_TMPDIR"])) as watch:  # auto-DNP's two stages, on tiny SD3.5
        proc = subprocess.run(
            [ray_cli, "job", "submit", "--address", address, "--",
             "python", str(JOB), "--prompts", str(PROMPTS), "--config", str(SD3), "--method", "auto-dnp",
             "--set", "steps=3", "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any(name == "gcs_server" for _, _, name in watch.listeners) and watch.non_loopback() == []
    assert watch.gcs_env and all(e == {"RAY_AUTH_MODE": "token", "token": True} for e in watch.gcs_env.values())
    unauthenticated = subprocess.run([ray_cli, "job", "list", "--address", address], capture_output=True, text=True,
                                     env={**{k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"},
                                          "RAY_AUTH_MODE": "disabled"}, timeout=120)
    assert unauthenticated.returncode != 0, unauthenticated.stdout  # a client without the token is refused
    assert "auto-dnp: 4 samples (0 failed) in 1 shards" in proc.stdout
    samples = read_run(out)
    assert sorted(samples) == EXAMPLE_KEYS and all("png" in f and "dns.png" in f for f in samples.values())
    assert all(json.loads(f["json"])["family"] == "sd3" for f in samples.values())


def test_dag_on_a_three_node_cluster_gives_the_in_process_bytes(ray_env, tmp_path, monkeypatch):
    """auto-DNP's two-stage DAG on the tiny Qwen-Image, two generation actors, on a head and two
    worker nodes, its prompts streamed from the file (PromptSet) against the in-process run from
    samples held in memory."""
    for key, value in ray_env.items():
        monkeypatch.setenv(key, value)
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
