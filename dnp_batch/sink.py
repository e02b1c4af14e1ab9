"""Results out: one image and one JSON record per sample, each file written whole or not at all."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DirSink:
    """`OUT/KEY.png` + `OUT/KEY.json` per sample, and `OUT/KEY.dns.png` where a DNS image exists."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)

    def _ensure_dir(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {self.out_dir} cannot be created: {e.strerror}") from None

    def write(self, key: str, image, record: dict, dns_image=None) -> None:
        self._ensure_dir()
        if dns_image is not None:
            _write_atomic(self.out_dir / f"{key}.dns.png", _png(dns_image))
        _write_atomic(self.out_dir / f"{key}.png", _png(image))
        text = json.dumps(record, indent=1, ensure_ascii=False, default=str)
        _write_atomic(self.out_dir / f"{key}.json", text.encode())

    def write_jsonl(self, name: str, rows: list[dict]) -> Path:
        self._ensure_dir()
        path = self.out_dir / name
        _write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
        return path


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
