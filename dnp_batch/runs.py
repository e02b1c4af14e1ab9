"""Finished runs and sweeps, read back through fsspec (local paths, file://, memory://, s3://, ...).

A run directory is what `jobs/generate.py` writes through `dnp_batch.sink` (which takes these
file names from here): `shard-*.tar`, `index.parquet`, `manifest.json`. A sweep directory holds
`sweep.json`,

    {"name": "tiny", "baseline": "cfg-w7",
     "points": [{"name": "cfg-w7", "overrides": {"guidance_scale": 7.0}, "dir": "points/cfg-w7"}, ...]}

and one run directory per point; a point's dir is relative to the sweep directory (or absolute,
or a URL). This module owns that format: `read_sweep` and `write_sweep` check it the same way.
`Run` reads one run: its manifest, its index, and its shards' members by sample key.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .fileio import WholeFiles, resolve

SWEEP = "sweep.json"
MANIFEST = "manifest.json"
INDEX = "index.parquet"
SHARDS = "shard-*.tar"
IMAGE_EXTS = ("png", "jpg", "webp")  # output.image_format values: the extension of a shard's image member
DNS_EXTS = tuple(f"dns.{ext}" for ext in IMAGE_EXTS)
DIGEST_KEY = b"dnp_batch.shard"  # a per-shard index's Parquet metadata: its tar's sha256, size, samples
RESUME_HINT = "rerun jobs/generate.py with --resume into that directory"


def join(base: str, rel: str) -> str:
    """`rel` under `base`, unless it is absolute or a URL itself."""
    return rel if "://" in rel or rel.startswith("/") else f"{str(base).rstrip('/')}/{rel}"


def basename(url) -> str:
    """The last part of a path or URL, as written (`s3://b/runs/cfg/` -> `cfg`)."""
    url = str(url)
    return url.rstrip("/").rsplit("/", 1)[-1] or url


def dir_name(url) -> str:
    """A directory's own name: resolved for a local path (so `.` is named), as written for a URL."""
    fs, root = resolve(url, "directory")
    return Path(root).resolve().name if _is_local(fs) else basename(root)


def _is_local(fs) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool({"file", "local"} & protocols)


def read_json(fs, path: str, what: str, shown: str | None = None) -> dict:
    """A JSON object file; errors name it as `what` `shown` (default: its path)."""
    shown = shown or path
    try:
        with fs.open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise ValueError(f"{what} {shown} is not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {shown} must hold a JSON object, got {type(data).__name__}")
    return data


# --- sweeps ---------------------------------------------------------------------------------

def is_sweep(url) -> bool:
    fs, root = resolve(url, "sweep")
    return fs.isfile(f"{root}/{SWEEP}")


def check_sweep(sweep: dict, file: str) -> dict:
    """`sweep` if it is a sweep: a points list of {name, dir, overrides?} with unique names, and a
    baseline that is one of them (or absent); `file` names it in the error."""
    points = sweep.get("points")
    if not isinstance(points, list) or not points:
        raise ValueError(f"sweep file {file} has no points; expected \"points\": [{{\"name\", \"dir\", ...}}]")
    names = []
    for n, point in enumerate(points, start=1):
        if (not isinstance(point, dict) or not point.get("name") or not isinstance(point["name"], str)
                or not point.get("dir") or not isinstance(point["dir"], str)):
            raise ValueError(f"sweep file {file}: point #{n} needs a name and a dir, got {point!r}")
        if not isinstance(point.get("overrides") or {}, dict):
            raise ValueError(f"sweep file {file}: point {point['name']!r} overrides must be an object")
        names.append(point["name"])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"sweep file {file}: duplicate point names {duplicates}; give each point its own name")
    baseline = sweep.get("baseline")
    if baseline is not None and baseline not in names:
        raise ValueError(f"sweep file {file}: baseline {baseline!r} is not a point; use one of {names}")
    return sweep


def read_sweep(url) -> dict:
    """`URL/sweep.json`, checked (see `check_sweep`)."""
    fs, root = resolve(url, "sweep")
    shown = join(url, SWEEP)
    return check_sweep(read_json(fs, f"{root}/{SWEEP}", "sweep file", shown), shown)


def sweep_points(url, sweep: dict | None = None) -> list[tuple[str, str, dict]]:
    """[(name, run directory, overrides)] of a sweep's points, in sweep order; dirs joined to `url`."""
    sweep = read_sweep(url) if sweep is None else sweep
    return [(p["name"], join(url, p["dir"]), dict(p.get("overrides") or {})) for p in sweep["points"]]


def write_sweep(url, name: str, points: list[dict], baseline: str | None = None) -> dict:
    """Write `URL/sweep.json` whole (checked first): `points` as [{name, overrides, dir}], dirs
    relative to `url`. Returns what it wrote."""
    fs, root = resolve(url, "--out")
    sweep = {"name": name, "baseline": baseline,
             "points": [{"name": p["name"], "overrides": p.get("overrides") or {}, "dir": p["dir"]} for p in points]}
    check_sweep(sweep, join(url, SWEEP))
    files = WholeFiles(fs, root)
    files.write(SWEEP, json.dumps(sweep, indent=1).encode())
    files.clear()  # a sweep directory's own temp area holds nothing but sweep.json's
    return sweep


def read_parquet(f) -> pa.Table:
    """A Parquet table from an open (fsspec) file, on this thread: pyarrow's reader threads, left
    reading a Python file object, can abort the interpreter at exit ("terminate called without an
    active exception", seen with pyarrow 26 reading through fsspec); our tables are small."""
    return pq.read_table(f, use_threads=False)


# --- runs -----------------------------------------------------------------------------------

class Run:
    """One run directory: its manifest, index and shard members. `name` (optional) labels errors."""

    def __init__(self, url, name: str | None = None):
        self.url = str(url)
        self.label = f"run {name} ({self.url})" if name else self.url
        self.fs, self.root = resolve(self.url, f"run {name}" if name else "run")
        self._members: dict[str, dict[str, tuple[str, int, int]]] | None = None

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    @property
    def is_finished(self) -> bool:
        """Both manifest.json and index.parquet exist (the job writes them at its end)."""
        return self.fs.isfile(self.path(MANIFEST)) and self.fs.isfile(self.path(INDEX))

    def check_finished(self) -> None:
        if not self.is_finished:
            raise ValueError(f"{self.label} is not a finished dnp_batch run (no {MANIFEST} + {INDEX}); "
                             f"finish or resume its run (jobs/generate.py --resume) first")

    def manifest(self) -> dict:
        return read_json(self.fs, self.path(MANIFEST), "run manifest", join(self.url, MANIFEST))

    def _read_index(self, read):
        path = self.path(INDEX)
        if not self.fs.exists(path):
            raise ValueError(f"{self.label} has no {INDEX}; pass the --out of a finished jobs/generate.py run")
        try:
            with self.fs.open(path, "rb") as f:
                return read(f)
        except (OSError, pa.ArrowException) as e:
            raise ValueError(f"{self.label}: cannot read {join(self.url, INDEX)}: {e}") from None

    def index(self) -> pa.Table:
        """index.parquet: one row per sample (ok or failed), columns `sink.INDEX_COLUMNS`."""
        return self._read_index(read_parquet)

    def index_frame(self) -> pd.DataFrame:
        """index.parquet as pandas reads it."""
        return self._read_index(pd.read_parquet)

    def rows(self) -> dict[str, dict]:
        """{key: index row, with `record` parsed}, in the index's order."""
        rows = {}
        for row in self.index().to_pylist():
            row["record"] = json.loads(row["record"]) if row.get("record") else {}
            rows[row["key"]] = row
        return rows

    def shards(self) -> list[str]:
        """The shard tars' paths, in shard order."""
        return sorted(self.fs.glob(self.path(SHARDS)))

    def members(self) -> dict[str, dict[str, tuple[str, int, int]]]:
        """{key: {ext: (shard path, data offset, size)}} over the run's shards (read once, cached);
        ext is what follows the key's first dot (`png`, `json`, `dns.png`)."""
        if self._members is None:
            members: dict[str, dict[str, tuple[str, int, int]]] = {}
            for shard in self.shards():
                try:
                    with self.fs.open(shard, "rb") as f, tarfile.open(fileobj=f) as tar:
                        for m in tar.getmembers():
                            if m.isfile() and "." in m.name:
                                key, ext = m.name.split(".", 1)
                                members.setdefault(key, {})[ext] = (shard, m.offset_data, m.size)
                except (OSError, tarfile.TarError) as e:
                    raise ValueError(f"{self.label}: cannot read shard {shard}: {e}; {RESUME_HINT}") from None
            self._members = members
        return self._members

    def read_many(self, keys, exts) -> dict[str, bytes]:
        """{key: bytes of its first member among `exts`} for the keys that have one; each shard is
        opened once."""
        members, wanted = self.members(), {}
        for key in keys:
            files = members.get(key, {})
            ext = next((e for e in exts if e in files), None)
            if ext is not None:
                shard, offset, size = files[ext]
                wanted.setdefault(shard, []).append((offset, size, key))
        data = {}
        for shard in sorted(wanted):
            try:
                with self.fs.open(shard, "rb") as f:
                    for offset, size, key in sorted(wanted[shard]):
                        f.seek(offset)
                        data[key] = f.read(size)
            except OSError as e:
                raise ValueError(f"{self.label}: cannot read shard {shard}: {e}; {RESUME_HINT}") from None
        return data

    def read(self, key: str, exts) -> bytes | None:
        return self.read_many([key], exts).get(key)

    def image(self, key: str) -> bytes | None:
        """The sample's image bytes, or None where the run holds none (a failed or unknown key)."""
        return self.read(key, IMAGE_EXTS)

    def dns_image(self, key: str) -> bytes | None:
        """The sample's DNS image bytes (auto-dnp, cnp), or None."""
        return self.read(key, DNS_EXTS)

    def record(self, key: str) -> dict | None:
        """The sample's record (its `KEY.json` member), or None."""
        data = self.read(key, ["json"])
        return None if data is None else json.loads(data)

    @property
    def has_dns(self) -> bool:
        return any(ext.startswith("dns.") for files in self.members().values() for ext in files)


# --- proof that a run is whole ---------------------------------------------------------------------


def shard_digest(index_table: pa.Table) -> dict:
    """{sha256, size, samples} of a shard's tar, from its per-shard index's metadata ({} if absent)."""
    meta = (index_table.schema.metadata or {}).get(DIGEST_KEY)
    return json.loads(meta) if meta else {}


def shard_index_path(root: str, shard: int) -> str:
    return f"{root}/index/shard-{shard:05d}.parquet"


def check_shard(fs, root: str, shard: int, expected: dict | None = None) -> tuple[list[str], list[str]]:
    """(problems, keys) of one written shard: its per-shard index reads; its tar exists, has the
    size and sha256 recorded when it was written (or `expected`), reads as a tar; its members are
    exactly KEY.{image, json, txt[, dns image]} of the index's ok rows, once each."""
    name = f"shard-{shard:05d}.tar"
    tar_path, index_path = f"{root}/{name}", shard_index_path(root, shard)
    try:
        with fs.open(index_path, "rb") as f:
            table = read_parquet(f)
    except (OSError, pa.ArrowException) as e:
        return [f"{name}: its index {index_path} does not read ({e})"], []
    digest = expected or shard_digest(table)
    if not fs.exists(tar_path):
        return [f"{name}: missing"], []
    data = fs.cat_file(tar_path)
    problems = []
    if digest and len(data) != digest.get("size"):
        problems.append(f"{name}: {len(data)} bytes, but {digest.get('size')} were written (truncated or replaced)")
    elif digest and hashlib.sha256(data).hexdigest() != digest.get("sha256"):
        problems.append(f"{name}: sha256 differs from the one recorded when it was written (corrupted)")
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = [m.name for m in tar.getmembers()]
    except tarfile.TarError as e:
        return problems + [f"{name}: not a readable tar ({e})"], []
    rows = table.select(["key", "status"]).to_pylist()
    ok = [r["key"] for r in rows if r["status"] == "ok"]
    members: dict[str, list[str]] = {}
    for member in names:
        key, _, ext = member.partition(".")
        members.setdefault(key, []).append(ext)
    for key in ok:
        exts = members.get(key, [])
        images = [e for e in exts if e in IMAGE_EXTS]
        if len(images) != 1 or exts.count("json") != 1 or exts.count("txt") != 1 or len(exts) != len(set(exts)):
            problems.append(f"{name}: sample {key} has members {sorted(exts)}; expected one image, json and txt")
    extra = sorted(set(members) - set(ok))
    if extra:
        problems.append(f"{name}: members of {len(extra)} key(s) not in its index as ok, e.g. {extra[0]!r}")
    if digest and digest.get("samples") != len(ok):
        problems.append(f"{name}: {len(ok)} ok samples in its index, but {digest.get('samples')} were written")
    return problems, [r["key"] for r in rows]


def verify_run(url) -> list[str]:
    """Every problem that keeps the run at `url` from being whole and intact (empty: it is):
    the manifest says complete and lists every shard; each shard reads and matches its recorded
    size, sha256 and index; keys are unique; index.parquet and the counts add up; no stray shard."""
    run = Run(url)
    if not run.fs.isfile(run.path(MANIFEST)):
        return [f"{url}: no {MANIFEST}: not a dnp_batch run, or one that never started"]
    manifest = run.manifest()
    problems = []
    if manifest.get("status") != "complete":
        problems.append(f"{MANIFEST}: status {manifest.get('status')!r}, not 'complete': {RESUME_HINT}")
    listed = {d["shard"]: d for d in manifest.get("shard_digests") or []}
    if not listed and manifest.get("status") == "complete":
        problems.append(f"{MANIFEST}: lists no shard digests (a run written before dnp_batch recorded them)")
    planned = manifest.get("shards")
    if isinstance(planned, int) and listed and sorted(listed) != list(range(planned)):
        problems.append(f"{MANIFEST}: plans {planned} shards but lists digests for {len(listed)}")
    on_disk = {int(p.rsplit("shard-", 1)[1].split(".")[0]) for p in run.shards()}
    stray = sorted(on_disk - set(listed)) if listed else []
    if stray:
        problems.append(f"shard-{stray[0]:05d}.tar and {len(stray) - 1} other(s) are not in {MANIFEST}")
    seen: dict[str, int] = {}
    for shard, digest in sorted(listed.items()):
        shard_problems, keys = check_shard(run.fs, run.root, shard, digest)
        problems += shard_problems
        if len(keys) != digest.get("rows", len(keys)):
            problems.append(f"shard-{shard:05d}.tar: its index has {len(keys)} rows, the manifest says {digest['rows']}")
        for key in keys:
            if key in seen:
                problems.append(f"key {key!r} is in shard {seen[key]} and shard {shard}")
            seen[key] = shard
    if run.fs.isfile(run.path(INDEX)):
        index_keys = run.index().column("key").to_pylist()
        if sorted(index_keys) != sorted(seen) or len(index_keys) != len(set(index_keys)):
            problems.append(f"{INDEX}: {len(index_keys)} rows do not match the shards' {len(seen)} samples one to one")
    elif manifest.get("status") == "complete":
        problems.append(f"{INDEX}: missing")
    counts = manifest.get("counts") or {}
    if "samples" in counts and counts["samples"] != len(seen):
        problems.append(f"{MANIFEST}: counts {counts['samples']} samples, the shards hold {len(seen)}")
    if isinstance(manifest.get("samples"), int) and listed and manifest["samples"] != len(seen):
        problems.append(f"{MANIFEST}: the prompt set has {manifest['samples']} samples, the shards hold {len(seen)}")
    return problems
