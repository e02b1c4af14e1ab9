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
        return self._read_index(pq.read_table)

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
