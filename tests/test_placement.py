"""One model per GPU, checked on Ray's fake GPUs: Ray schedules `num_gpus` on a CPU machine as on a
GPU cluster and tells each actor its GPU ids; the stages run on the CPU through the same code a
GPU run takes (device `auto` resolves to cpu) and record where each sample was made."""

import threading
import time

import ray
from ray.cluster_utils import Cluster

from dnp_batch.config import load_config
from dnp_batch.dag import run_ray
from dnp_batch.job import run
from dnp_batch.prompts import expand_samples, read_prompts
from jobutil import FAST, PROMPTS, records


def _by_actor(recs, stage):
    """{(node, pid): gpu_ids} of the actors of `stage` that made these records."""
    out = {}
    for rec in recs:
        p = rec["placement"][stage]
        assert p["device"] == "cpu"  # no CUDA here: the CPU fallback of device auto
        out.setdefault((p["node"], p["pid"]), set()).add(tuple(p["gpu_ids"]))
    assert all(len(ids) == 1 for ids in out.values()), out  # an actor keeps its GPU
    return {actor: next(iter(ids)) for actor, ids in out.items()}


def test_each_generation_actor_pins_its_own_gpu_and_scorers_share_one(ray_env, tmp_path, monkeypatch):
    for key, value in ray_env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(FAST, method="cfg", sets=[
        "steps=2", "stages.generate.actors=4", "stages.generate.num_gpus=1", "stages.generate.num_cpus=0.25",
        "stages.score.actors=2", "stages.score.num_gpus=0.25", "stages.score.num_cpus=0.25",
        "stages.write.num_cpus=0.25", "output.samples_per_shard=1"])
    samples = expand_samples(read_prompts(PROMPTS), 4)  # 16 one-sample shards
    ray.init(address="local", num_cpus=2, num_gpus=5, include_dashboard=False, _temp_dir=ray_env["RAY_TMPDIR"])
    try:
        summary = run(cfg, samples, str(tmp_path / "out"), run_ray)
    finally:
        ray.shutdown()
    assert summary.samples == 16 and summary.failed == 0
    recs = list(records(tmp_path / "out").values())
    generate, score = _by_actor(recs, "generate"), _by_actor(recs, "score")
    gen_ids = list(generate.values())
    assert all(len(ids) == 1 for ids in gen_ids) and len(set(gen_ids)) == len(gen_ids), generate  # one each
    assert len(generate) >= 2, generate  # the work was spread, so the ids above were compared
    score_ids = set(score.values())
    assert len(score_ids) == 1 and len(next(iter(score_ids))) == 1, score  # 0.25 + 0.25: one shared GPU
    assert not score_ids & set(gen_ids)  # whole GPUs are not shared


def test_an_autoscaling_pool_grows_onto_a_gpu_node_added_mid_job(ray_env, tmp_path, monkeypatch):
    """`actors: {min: 1, max: 3}` is Ray Data's autoscaling pool: it starts one generation actor on
    the one GPU there is, and takes the GPUs of a node that joins while shards are still queued."""
    for key, value in ray_env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(FAST, method="cfg", sets=[
        "steps=80", "stages.generate.actors={min: 1, max: 3}", "stages.generate.num_gpus=1",
        "stages.generate.num_cpus=0.25", "scores=[]", "stages.write.num_cpus=0.25", "output.samples_per_shard=1"])
    samples = expand_samples(read_prompts(PROMPTS), 12)  # 48 one-sample shards: ~25 s of work for one actor
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
