"""Helpers for the job tests: run jobs/generate.py in process, read what it wrote."""

import glob
import importlib.util
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "generate.py"
FAST = REPO / "configs" / "tiny-sd.yaml"
PROMPTS = REPO / "examples" / "scenes.jsonl"
EXAMPLE_KEYS = ["astronaut_0", "city_0", "fox_0", "teapot_0"]


def load_job():
    spec = importlib.util.spec_from_file_location("generate_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_job(*args, distributor: str = "local") -> int:
    """jobs/generate.py's main() in this process (the local distributor unless told otherwise)."""
    return load_job().main([str(a) for a in args] + ["--distributor", distributor])


def read_run(out) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} over every shard tar in `out`; asserts no key appears twice."""
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(glob.glob(f"{out}/shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                assert ext not in samples.setdefault(key, {}), f"{member.name} written twice"
                samples[key][ext] = tar.extractfile(member).read()
    return samples


def records(out) -> dict[str, dict]:
    return {key: json.loads(files["json"]) for key, files in read_run(out).items()}


def index(out) -> list[dict]:
    return pq.read_table(Path(out) / "index.parquet").to_pylist()
