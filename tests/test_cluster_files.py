"""cluster/ and configs/: the YAMLs parse, their job entrypoints are commands this repo's CLI
accepts, the configs they name load, and the GPUs those configs ask for fit the clusters."""

import json
import os
import re
import shlex

import pytest
import yaml

from jobutil import REPO, load_job

from dnp_batch import AnswerSettings
from dnp_batch.config import load_config
from dnp_batch.prompts import FORMATS
from dnp_batch.stages import build_stages

CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "ray-cluster.yaml"
RAYJOB = CLUSTER / "rayjob.yaml"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SDXL_CONFIGS = sorted((REPO / "configs").glob("sdxl-*.yaml"))
JOB_PREFIX = ["python", "jobs/generate.py"]


def load_yaml(path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def launcher_entrypoint() -> str:
    lines = [line for line in LAUNCHER.read_text().splitlines() if line.startswith("# entrypoint: ")]
    assert len(lines) == 1, "ray-cluster.yaml needs exactly one `# entrypoint: ` comment line"
    return lines[0].removeprefix("# entrypoint: ").strip()


def launcher_submit_command() -> list[str]:
    """The `ray job submit ...` command of the launcher's header comment, continuation lines joined."""
    text = "\n".join(line[1:] for line in LAUNCHER.read_text().splitlines() if line.startswith("#"))
    match = re.search(r"ray job submit (?:[^\n]*\\\n)*[^\n]*", text)
    assert match, "ray-cluster.yaml's comments should show the `ray job submit` command"
    return shlex.split(match.group(0).replace("\\\n", " "))


def rayjob_entrypoint() -> str:
    return load_yaml(RAYJOB)["spec"]["entrypoint"]


def cluster_gpus_launcher() -> list[int]:
    """GPUs per node of the launcher cluster at its largest (head, then max_workers of each type)."""
    cfg = load_yaml(LAUNCHER)
    types = cfg["available_node_types"]
    nodes = [types[cfg["head_node_type"]]["resources"].get("GPU", 0)]
    budget = cfg.get("max_workers", 2)
    for name, node in types.items():
        if name == cfg["head_node_type"]:
            continue
        count = min(node.get("max_workers", budget), budget)
        nodes += [node["resources"].get("GPU", 0)] * count
        budget -= count
    return nodes


def cluster_gpus_rayjob() -> list[int]:
    """GPUs per Ray node (pod) of the RayJob's cluster: the head, then every worker replica."""
    spec = load_yaml(RAYJOB)["spec"]["rayClusterSpec"]

    def pod_gpus(template):
        return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
                   for c in template["spec"]["containers"])

    nodes = [pod_gpus(spec["headGroupSpec"]["template"])]
    for group in spec["workerGroupSpecs"]:
        nodes += [pod_gpus(group["template"])] * group.get("maxReplicas", group["replicas"])
    return nodes


def gpu_requests(cfg) -> list[float]:
    """num_gpus of every actor the job starts (the stages its method and config use)."""
    return [s.resources.num_gpus for s in build_stages([cfg]) for _ in range(s.resources.max_actors)]


def fits(requests: list[float], nodes: list[int]) -> bool:
    """First-fit decreasing: can Ray place every actor, none split across nodes?"""
    free = [float(n) for n in nodes]
    for need in sorted(requests, reverse=True):
        for i, room in enumerate(free):
            if need <= room + 1e-9:
                free[i] -= need
                break
        else:
            return False
    return True


# --- configs/ ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.method and cfg.steps >= 1


def test_real_configs_exist():
    assert [p.name for p in SDXL_CONFIGS] == ["sdxl-answer.yaml", "sdxl-auto-dnp.yaml", "sdxl-cfg.yaml"]


@pytest.mark.parametrize("path", SDXL_CONFIGS, ids=lambda p: p.name)
def test_sdxl_configs_ask_for_gpus_fp16_and_methods_defaults(path):
    cfg = load_config(path)
    assert cfg.model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert cfg.dtype == "float16" and cfg.device == "auto"
    assert cfg.stages.generate.num_gpus >= 1 and cfg.stages.generate.actors >= 1
    assert 0 < cfg.stages.score.num_gpus < 1  # the scorer shares a GPU
    # docs/METHODS.md §Default hyperparameters: SDXL base at 1024², Euler discrete, 30 steps, w = 7, w_dns = w.
    assert (cfg.height, cfg.width, cfg.steps, cfg.guidance_scale) == (1024, 1024, 30, 7.0)
    assert cfg.scheduler == "euler" and cfg.dns_guidance_scale is None
    assert cfg.clip.model == "ViT-H-14" and cfg.clip.pretrained == "laion2b_s32b_b79k"
    assert cfg.method == path.stem.removeprefix("sdxl-")
    if cfg.method == "answer":
        assert cfg.answer == AnswerSettings()
        assert "answer" in load_yaml(path)  # spelled out, not left implicit
    if cfg.method == "auto-dnp":
        assert cfg.captioner.model == "Salesforce/blip2-opt-2.7b" and cfg.captioner.max_new_tokens == 30
        assert cfg.dnp.same_seed and cfg.stages.dns_caption.num_gpus >= 1
        assert [s.name for s in build_stages([cfg])] == ["dns_caption", "generate", "score", "write"]


@pytest.mark.parametrize("name,model,steps,w,size", [
    ("sd35-cfg", "stabilityai/stable-diffusion-3.5-large", 28, 3.5, 1024),
    ("sd35-answer", "stabilityai/stable-diffusion-3.5-large", 28, 3.5, 1024),
    ("sd35-auto-dnp", "stabilityai/stable-diffusion-3.5-large", 28, 3.5, 1024),
    ("qwenimage-answer", "Qwen/Qwen-Image", 50, 4.0, 1328),
])
def test_flow_family_configs_name_the_published_models_in_bfloat16(name, model, steps, w, size):
    """The model cards' calls: SD3.5-large 28 steps at 3.5, Qwen-Image 50 steps at true_cfg_scale 4."""
    path = REPO / "configs" / f"{name}.yaml"
    cfg = load_config(path)
    assert (cfg.model, cfg.dtype, cfg.device, cfg.steps, cfg.guidance_scale) == (model, "bfloat16", "auto", steps, w)
    assert cfg.height == cfg.width == size and size % 16 == 0  # VAE factor 8 × 2×2 patches
    assert cfg.method == name.split("-", 1)[1] and cfg.scheduler is None  # the model's own FlowMatchEuler
    assert cfg.stages.generate.num_gpus >= 1
    if cfg.method == "answer":
        assert cfg.answer == AnswerSettings() and "answer" in load_yaml(path)


# --- cluster/ray-cluster.yaml (Ray cluster launcher) --------------------------------------------


def test_launcher_yaml_has_cpu_head_and_gpu_workers():
    cfg = load_yaml(LAUNCHER)
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types and cfg["provider"]["type"] == "aws"
    assert types[head]["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != head}
    gpu_workers = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "some worker node type must offer GPUs"
    for t in gpu_workers.values():
        assert 0 <= t["min_workers"] <= t["max_workers"] and t["node_config"]["InstanceType"]
    assert any("pip install -c constraints.txt -e ." in c for c in cfg["setup_commands"])
    assert any("git clone" in c for c in cfg["setup_commands"])


def test_launcher_yaml_matches_rays_schema():
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema_path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    with open(schema_path) as f:
        jsonschema.validate(load_yaml(LAUNCHER), json.load(f))


def test_launcher_comment_shows_the_submit_command_of_its_entrypoint():
    argv = launcher_submit_command()
    assert argv[:3] == ["ray", "job", "submit"]
    assert argv[argv.index("--address") + 1] == "http://127.0.0.1:8265"
    assert "--working-dir" in argv  # ships jobs/ and configs/ to the cluster
    assert argv[argv.index("--") + 1:] == shlex.split(launcher_entrypoint())
    text = LAUNCHER.read_text()
    assert "ray up cluster/ray-cluster.yaml" in text and "ray dashboard" in text


# --- cluster/rayjob.yaml (KubeRay) ----------------------------------------------------------------


def test_rayjob_yaml():
    job = load_yaml(RAYJOB)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["entrypoint"].startswith("python jobs/generate.py ")
    cluster = spec["rayClusterSpec"]
    images = {c["image"] for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]}
    assert cluster["workerGroupSpecs"]
    for group in cluster["workerGroupSpecs"]:
        containers = group["template"]["spec"]["containers"]
        assert any(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1 for c in containers)
        images |= {c["image"] for c in containers}
    assert len(images) == 1, f"head and workers should run one image, got {images}"
    (image,) = images
    assert image.startswith("rayproject/ray:") and image.endswith("-gpu")
    assert image.split(":")[1].startswith(cluster["rayVersion"] + "-")
    for key, value in cluster["headGroupSpec"]["rayStartParams"].items():
        assert isinstance(value, str), f"rayStartParams.{key} must be a string for KubeRay"


def test_rayjob_runtime_env_installs_dnp_batch_with_the_pinned_torch():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load(load_yaml(RAYJOB)["spec"]["runtimeEnvYAML"])
    RuntimeEnv(**env)  # Ray's own validation of the fields
    assert env["working_dir"]  # the entrypoint's relative jobs/ and configs/ paths resolve there
    packages = env["pip"]["packages"]
    assert any(p.replace(" ", "").startswith("dnp_batch@") for p in packages)
    pins = [line.strip() for line in (REPO / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and all(pin in packages for pin in pins), f"pin {pins} as constraints.txt does"


# --- the entrypoints: commands the CLI accepts, on configs that load and fit the cluster ----------


ENTRYPOINTS = {
    "ray-cluster.yaml": (launcher_entrypoint, cluster_gpus_launcher),
    "rayjob.yaml": (rayjob_entrypoint, cluster_gpus_rayjob),
}


@pytest.mark.parametrize("name", sorted(ENTRYPOINTS))
def test_entrypoint_is_a_command_the_cli_accepts(name):
    entrypoint, cluster_gpus = ENTRYPOINTS[name]
    argv = shlex.split(entrypoint())
    assert argv[:2] == JOB_PREFIX, f"{name}: entrypoint should start with `python jobs/generate.py`"
    assert (REPO / argv[1]).is_file()
    args = load_job().parse_args(argv[2:])  # argparse exits (SystemExit) on what it refuses

    assert args.config, f"{name}: the entrypoint should name a --config"
    config = REPO / args.config
    assert config.is_file(), f"{name}: --config {args.config} is not in the repo"
    assert args.out.startswith(("s3://", "gs://")), "a cluster job writes to shared storage"
    assert args.prompts.lower().endswith(FORMATS)
    output = {"samples_per_shard": args.samples_per_shard} if args.samples_per_shard else None
    cfg = load_config(config, sets=args.set, method=args.method, seeds=args.seeds, output=output)
    assert cfg.dtype == "float16" and cfg.stages.generate.num_gpus >= 1

    nodes = cluster_gpus()
    requests = gpu_requests(cfg)
    assert fits(requests, nodes), f"{name}: actors asking for GPUs {requests} do not fit nodes {nodes}"


def test_fits():
    assert fits([1, 1, 1, 0.25], [0, 1, 1, 1, 1])
    assert not fits([1, 1, 1, 0.25], [0, 1, 1, 1])
    assert fits([1] * 7 + [0.25], [0, 8]) and not fits([1] * 8 + [0.25], [0, 8])
    assert not fits([2], [1, 1])


# --- private by default ---------------------------------------------------------------------


def test_launcher_cluster_uses_token_auth_and_a_localhost_dashboard():
    cfg = load_yaml(LAUNCHER)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cfg[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token ray start" in c for c in start), key
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" not in head and "--dashboard-host=127.0.0.1" in head
    assert cfg["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}  # the token, where Ray reads it
    assert "RAY_AUTH_MODE=token ray job submit" in LAUNCHER.read_text()


def test_rayjob_uses_kuberays_token_auth_and_a_cluster_ip_service():
    spec = load_yaml(RAYJOB)["spec"]["rayClusterSpec"]
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
