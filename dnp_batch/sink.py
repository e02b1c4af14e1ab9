"""Results out, through fsspec: WebDataset shards, a Parquet index, and a run manifest.

Layout of OUT (any fsspec URL):
    shard-00000.tar ...   KEY.png|jpg|webp, KEY.json, KEY.txt, KEY.dns.png per sample
    index/shard-00000.parquet ...   one row per sample of the shard (failed samples too)
    index.parquet         all rows, rebuilt at the end of every run
    manifest.json         config, prompt-set digest, shard plan, versions, counts, each shard's
                          sha256, size and sample count (`python jobs/verify.py OUT` checks them)
A file appears under its final name only once it is whole (`dnp_batch.fileio.WholeFiles`: temp
name under `_tmp/`, then a move), and a shard counts as done only when its tar exists, so readers
never see half a shard. `dnp_batch.runs` names these files and reads a run back.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from .fileio import TMP, WholeFiles, resolve
from .runs import DIGEST_KEY, INDEX, MANIFEST, SHARDS, Run, read_parquet, shard_digest

INDEX_COLUMNS = ("key", "shard", "status", "error", "prompt", "seed", "method", "clip_score", "record")


def encode_image(image, fmt: str = "png", quality: int = 95) -> bytes:
    """PIL image -> PNG / JPEG / WebP bytes."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    elif fmt == "jpg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=quality)
    else:
        raise ValueError(f"output.image_format must be png, jpg or webp, got {fmt!r}")
    return buf.getvalue()


def record_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)


class ShardSink:
    """Writes and finds shards under an fsspec URL."""

    def __init__(self, url: str):
        self.url = url
        self.fs, self.root = resolve(url, "--out")
        self.files = WholeFiles(self.fs, self.root)

    @property
    def protocols(self) -> set[str]:
        protocol = self.fs.protocol
        return {protocol} if isinstance(protocol, str) else set(protocol)

    @property
    def is_local(self) -> bool:
        """Storage that only this machine (or process) sees: a local path or memory://."""
        return bool({"file", "local", "memory"} & self.protocols)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @staticmethod
    def shard_name(shard: int) -> str:
        return f"shard-{shard:05d}.tar"

    def check_writable(self) -> None:
        """Write and remove a probe file (and OUT, if it did not exist), so an unwritable --out
        fails before any work and a check leaves nothing behind."""
        existed = self.fs.exists(self.root)
        probe = self.path(f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            with self.fs.open(probe, "wb") as f:
                f.write(b"ok")
            self.fs.rm(probe)
            if not existed:
                self.fs.rm(self.root, recursive=True)
        except (OSError, PermissionError) as e:
            raise ValueError(f"--out {self.url} is not writable: {e}") from None

    def remove_if_unstarted(self, existed: bool) -> None:
        """After a run that failed before writing any shard: leave OUT as it was found."""
        if self.done_shards():
            return
        for pattern in (MANIFEST, TMP, "index"):
            for path in self.fs.glob(self.path(pattern)):
                self.fs.rm(path, recursive=True)
        if not existed and self.fs.exists(self.root) and not self.fs.ls(self.root, detail=False):
            self.fs.rm(self.root, recursive=True)

    def put(self, name: str, data: bytes) -> None:
        """Write OUT/name whole or not at all (temp file under `_tmp/`, then a move)."""
        self.files.write(name, data)

    def read_manifest(self) -> dict | None:
        """The run manifest in OUT, or None where there is none yet."""
        return Run(self.url).manifest() if self.fs.exists(self.path(MANIFEST)) else None

    def write_manifest(self, manifest: dict) -> None:
        self.put(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, default=str).encode())

    def has_foreign_files(self, allowed: set[str] = frozenset()) -> bool:
        """OUT holds files that this sink did not write (then a new run refuses to start there)."""
        if not self.fs.exists(self.root):
            return False
        ours = {MANIFEST, INDEX, "index", TMP, "negatives.jsonl", *allowed}
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        return any(n not in ours and not (n.startswith("shard-") and n.endswith(".tar")) for n in names)

    def done_shards(self) -> set[int]:
        """Shards whose tar and index both exist (the tar is moved into place last)."""
        tars = self.fs.glob(self.path(SHARDS))
        done = set()
        for tar in tars:
            shard = int(tar.rsplit("shard-", 1)[1].split(".")[0])
            if self.fs.exists(self.path("index", f"shard-{shard:05d}.parquet")):
                done.add(shard)
        return done

    def clear(self) -> None:
        """Remove everything this sink writes (for --overwrite)."""
        for pattern in (SHARDS, "index", INDEX, MANIFEST, TMP, "negatives.jsonl"):
            for path in self.fs.glob(self.path(pattern)):
                self.fs.rm(path, recursive=True)

    def write_shard(self, shard: int, items: list[dict], image_ext: str) -> None:
        """`items`: dicts with key, record, and for successes image (bytes), dns_image (bytes|None);
        failures carry `error` instead. Writes the shard's index (whose Parquet metadata holds the
        tar's sha256, size and sample count, see `runs.shard_digest`), then its tar."""
        tar = shard_tar(items, image_ext)
        digest = {"sha256": hashlib.sha256(tar).hexdigest(), "size": len(tar),
                  "samples": sum(1 for item in items if not item.get("error"))}
        rows = [index_row(shard, item) for item in items]
        table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA).replace_schema_metadata(
            {DIGEST_KEY: json.dumps(digest, sort_keys=True)})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.put(f"index/shard-{shard:05d}.parquet", buf.getvalue())
        self.put(self.shard_name(shard), tar)

    def write_index(self) -> tuple[pa.Table, list[dict]]:
        """Concatenate the per-shard indexes of all done shards into `index.parquet`; returns it and
        each shard's digest (for the manifest)."""
        tables, digests = [], []
        for shard in sorted(self.done_shards()):
            with self.fs.open(self.path("index", f"shard-{shard:05d}.parquet"), "rb") as f:
                table = read_parquet(f)
            digests.append({"shard": shard, "name": self.shard_name(shard), "rows": table.num_rows,
                            **shard_digest(table)})
            tables.append(table.replace_schema_metadata(None))
        table = pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.put(INDEX, buf.getvalue())
        return table, digests

    def finish(self) -> None:
        """Remove the temp area once a run is over."""
        self.files.clear()


INDEX_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.int64()), ("status", pa.string()), ("error", pa.string()),
    ("prompt", pa.string()), ("seed", pa.int64()), ("method", pa.string()), ("clip_score", pa.float64()),
    ("record", pa.string()),
])


def index_row(shard: int, item: dict) -> dict:
    record = item["record"]
    return {
        "key": item["key"],
        "shard": shard,
        "status": "failed" if item.get("error") else "ok",
        "error": item.get("error"),
        "prompt": record.get("prompt"),
        "seed": record.get("seed"),
        "method": record.get("method"),
        "clip_score": record.get("clip_score"),
        "record": record_json(record),
    }


def shard_tar(items: list[dict], image_ext: str) -> bytes:
    """A WebDataset tar: members `KEY.EXT` grouped by sample, in the items' order, fixed mtime."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for item in items:
            if item.get("error"):
                continue
            key, record = item["key"], item["record"]
            members = [(image_ext, item["image"]), ("json", record_json(record).encode()),
                       ("txt", record["prompt"].encode())]
            if item.get("dns_image") is not None:
                members.append((f"dns.{image_ext}", item["dns_image"]))
            for ext, data in members:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
