"""Shared fixtures: tiny SD/SDXL/SD3/Qwen-Image pipelines built once per session, loaded through the real loader."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# Before diffusers/huggingface_hub are imported: they read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
_CACHE = tempfile.mkdtemp(prefix="dnp_batch-test-cache-")
os.environ["DNP_BATCH_CACHE"] = _CACHE
# Every Ray instance the tests start is private as the job's own (dnp_batch.dag.make_ray_private):
# token authentication with one random token for this test process and its children, and loopback
# listeners (a flag Ray reads when it is first imported, so set before any test module imports it).
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
os.environ.pop("RAY_AUTH_TOKEN_PATH", None)

import pytest  # noqa: E402

from dnp_batch.models import load_pipeline  # noqa: E402
from dnp_batch.tiny import build_tiny  # noqa: E402


def pytest_configure(config):
    # diffusers' schedulers call np.array(tensor) in a way numpy 2 flags; harmless, not ours.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    )
    if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        # pytest-xdist runs the suite in one worker per core (pyproject's addopts): one torch thread
        # each, so two workers on two cores do not oversubscribe them. Every numeric test passes at
        # one thread as at the machine's default (tests/numerics.py); `python -m pytest -n 0` runs
        # in one process at torch's default.
        import torch

        torch.set_num_threads(1)


RAY_FIXTURES = {"ray_env", "live_head"}


def pytest_collection_modifyitems(config, items):
    """Every test that starts Ray (it asks for a Ray fixture) lives in tests/test_ray.py, the one
    module that pytest-xdist's `--dist loadfile` keeps in one worker, its tests one after another
    (that module's docstring says why)."""
    stray = [item.nodeid for item in items if RAY_FIXTURES & set(getattr(item, "fixturenames", ()))
             and item.path.name != "test_ray.py"]
    if stray:
        raise pytest.UsageError(f"tests that start Ray belong in tests/test_ray.py: {', '.join(stray)}")
    # That module is the suite's longest: collected first, a worker starts it at once (the files are
    # handed out in collection order), and the other files share the other worker, then both.
    items.sort(key=lambda item: item.path.name != "test_ray.py")  # stable: each file keeps its order


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    return build_tiny("sdxl", tmp_path_factory.mktemp("tiny") / "sdxl")


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    return build_tiny("sd", tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory):
    return build_tiny("sd3", tmp_path_factory.mktemp("tiny") / "sd3")


@pytest.fixture
def tiny_sd3(tiny_sd3_dir):
    """A fresh tiny SD3.5-style pipeline (MMDiT, flow matching) per test."""
    return load_pipeline(tiny_sd3_dir)


@pytest.fixture(scope="session")
def tiny_qwenimage_dir(tmp_path_factory):
    return build_tiny("qwenimage", tmp_path_factory.mktemp("tiny") / "qwenimage")


@pytest.fixture
def tiny_qwenimage(tiny_qwenimage_dir):
    """A fresh tiny Qwen-Image pipeline (MMDiT on packed latents, Qwen2.5-VL text) per test."""
    return load_pipeline(tiny_qwenimage_dir)


@pytest.fixture
def tiny_sdxl(tiny_sdxl_dir):
    """A fresh tiny SDXL pipeline per test, so tests may swap its scheduler."""
    return load_pipeline(tiny_sdxl_dir)


@pytest.fixture
def tiny_sd(tiny_sd_dir):
    """A fresh tiny SD1.5-style pipeline per test, so tests may swap its scheduler."""
    return load_pipeline(tiny_sd_dir)


@pytest.fixture(scope="session")
def ray_env():
    """Environment for a job or cluster on loopback, with Ray's files in a short temp dir (unix
    socket paths must stay short) that is removed afterwards."""
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=tmp)  # RAY_AUTH_MODE/RAY_AUTH_TOKEN and loopback: set at the top of this file
    yield env
    shutil.rmtree(tmp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_head(ray_env):
    """`ray start --head` on loopback with its files in a temp dir, for the tests of a module;
    stopped (`ray stop --force`: every Ray process of the machine) and cleaned up after them."""
    env = {**ray_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ray_env['PATH']}"}
    temp_dir = Path(ray_env["RAY_TMPDIR"]) / "head"
    dashboard = free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray_cli, "start", "--head", f"--port={free_port()}", f"--dashboard-port={dashboard}",
                    "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=120)
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        (temp_dir / "ray_current_cluster").unlink(missing_ok=True)  # else the next ray.init joins a dead cluster
        shutil.rmtree(temp_dir, ignore_errors=True)
