"""Files that appear whole or not at all, on any fsspec filesystem (local, memory://, s3://, ...).

A file is written under a temp name in `ROOT/_tmp/`, then moved to its final name, so a reader
never sees half a file; a write that fails removes its temp file and leaves the final name as it
was. `dnp_batch.sink` (run shards, index, manifest), `dnp_batch.runs` (sweep.json) and
`dnp_batch.pairs` (pairs shards, parquet, manifest) all write this way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import BinaryIO

import fsspec

TMP = "_tmp"


def resolve(url, what: str):
    """(filesystem, root path without a trailing slash) of a local path or fsspec URL; `what`
    names the URL in the error (e.g. "--out", "run cfg")."""
    try:
        fs, root = fsspec.core.url_to_fs(str(url))
    except (ValueError, ImportError) as e:
        raise ValueError(f"{what} {url} is not a usable fsspec URL: {e}") from None
    return fs, root.rstrip("/") or "/"


class WholeFiles:
    """Writes files under `root` on `fs`, each whole or not at all (temp name under `_tmp/`, then a move)."""

    def __init__(self, fs, root: str):
        self.fs, self.root = fs, root

    @property
    def tmp_dir(self) -> str:
        return f"{self.root}/{TMP}"

    def write(self, name: str, data: bytes | Callable[[BinaryIO], None]) -> None:
        """ROOT/name (a relative path) from `data`: bytes, or a function that writes into the
        open binary file."""
        tmp = f"{self.tmp_dir}/{uuid.uuid4().hex}-{name.replace('/', '_')}"
        self.fs.makedirs(self.tmp_dir, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as f:
                if callable(data):
                    data(f)
                else:
                    f.write(data)
            final = f"{self.root}/{name}"
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise

    def _discard(self, tmp: str) -> None:
        try:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
        except OSError:
            pass  # the write's own error is the one to report

    def clear(self) -> None:
        """Remove the temp area (once no write is in flight)."""
        if self.fs.exists(self.tmp_dir):
            self.fs.rm(self.tmp_dir, recursive=True)
