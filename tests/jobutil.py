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
SD3 = REPO / "configs" / "tiny-sd3.yaml"
QWEN = REPO / "configs" / "tiny-qwenimage.yaml"
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


class ListenerWatch:
    """Polls, in a thread, the listening TCP sockets of a set of processes (`procs()` gives them,
    e.g. a job's process tree) while something runs; reads sockets and /proc only, sends nothing.
    `listeners`: {(ip, port, process name)}; `gcs_env`: the auth variables of each gcs_server seen."""

    def __init__(self, procs, interval: float = 0.25):
        import threading

        self.procs, self.interval = procs, interval
        self.listeners: set[tuple[str, int, str]] = set()
        self.gcs_env: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        import psutil

        for p in self.procs():
            try:
                name = p.name()
                conns = p.net_connections(kind="inet")
                if name == "gcs_server" and p.pid not in self.gcs_env:
                    env = p.environ()
                    self.gcs_env[p.pid] = {"RAY_AUTH_MODE": env.get("RAY_AUTH_MODE"),
                                           "token": bool(env.get("RAY_AUTH_TOKEN"))}
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.listeners |= {(c.laddr.ip, c.laddr.port, name) for c in conns if c.status == psutil.CONN_LISTEN}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def non_loopback(self) -> list[tuple[str, int, str]]:
        import ipaddress

        def loopback(ip: str) -> bool:
            addr = ipaddress.ip_address(ip.split("%")[0])
            mapped = getattr(addr, "ipv4_mapped", None)
            return (mapped or addr).is_loopback

        return sorted(entry for entry in self.listeners if not loopback(entry[0]))


def process_tree(root):
    """`root` (a psutil.Process) and its descendants, as a callable for ListenerWatch."""
    import psutil

    def procs():
        try:
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    return procs


def processes_under(path):
    """Processes whose command line names `path` (a `ray start --head --temp-dir` instance's
    daemons), and their descendants, as a callable for ListenerWatch."""
    import psutil

    def procs():
        roots = [p for p in psutil.process_iter(["cmdline"]) if any(str(path) in a for a in p.info["cmdline"] or [])]
        out = {}
        for r in roots:
            try:
                for p in [r, *r.children(recursive=True)]:
                    out[p.pid] = p
            except psutil.NoSuchProcess:
                continue
        return list(out.values())

    return procs
