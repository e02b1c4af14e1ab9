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
    """`OUT/KEY.png` + `OUT/KEY.json` per sample."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)

    def write(self, key: str, image, record: dict) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--out {self.out_dir} cannot be created: {e.strerror}") from None
        png = io.BytesIO()
        image.save(png, format="PNG")
        _write_atomic(self.out_dir / f"{key}.png", png.getvalue())
        text = json.dumps(record, indent=1, ensure_ascii=False, default=str)
        _write_atomic(self.out_dir / f"{key}.json", text.encode())
