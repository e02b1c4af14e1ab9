"""Reading runs and sweeps back (dnp_batch.runs) and writing files whole (dnp_batch.fileio), on a
local directory, file:// and memory://."""

import json
import uuid

import fsspec
import pytest

from dnp_batch.fileio import TMP, WholeFiles, resolve
from dnp_batch.runs import Run, is_sweep, read_sweep, sweep_points, write_sweep
from dnp_batch.sink import ShardSink


@pytest.fixture(params=["local", "file", "memory"])
def base(request, tmp_path):
    """A fresh directory URL on each kind of filesystem."""
    if request.param == "local":
        yield str(tmp_path / "d")
    elif request.param == "file":
        yield f"file://{tmp_path}/d"
    else:
        root = f"/runs-test-{uuid.uuid4().hex}"
        yield f"memory://{root}/d"
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)


def files_under(url) -> list[str]:
    fs, root = resolve(url, "test")
    return sorted(p[len(root) + 1:] for p in fs.find(root)) if fs.exists(root) else []


POINTS = [{"name": "cfg", "overrides": {"method": "cfg", "answer.k": 2}, "dir": "points/cfg"},
          {"name": "dns", "overrides": {}, "dir": "/elsewhere/dns"}]


def test_sweep_json_round_trip(base):
    assert not is_sweep(base)
    written = write_sweep(base, "tiny", POINTS, baseline="cfg")
    assert files_under(base) == ["sweep.json"]  # no temp file, no _tmp left
    fs, root = resolve(base, "test")
    assert fs.cat(f"{root}/sweep.json") == json.dumps(written, indent=1).encode()
    assert is_sweep(base) and read_sweep(base) == {"name": "tiny", "baseline": "cfg", "points": POINTS}
    assert sweep_points(base) == [("cfg", f"{base}/points/cfg", {"method": "cfg", "answer.k": 2}),
                                  ("dns", "/elsewhere/dns", {})]


def test_bad_sweeps_are_refused_and_named(base):
    with pytest.raises(ValueError, match="baseline 'nope' is not a point"):
        write_sweep(base, "tiny", POINTS, baseline="nope")
    with pytest.raises(ValueError, match=r"duplicate point names \['cfg'\]"):
        write_sweep(base, "tiny", [POINTS[0], POINTS[0]])
    assert files_under(base) == []
    fs, root = resolve(base, "test")
    fs.makedirs(root, exist_ok=True)
    fs.pipe(f"{root}/sweep.json", b'{"points": [{"name": "a"}]}')
    with pytest.raises(ValueError, match=r"sweep\.json: point #1 needs a name and a dir"):
        read_sweep(base)
    fs.pipe(f"{root}/sweep.json", b"[1, 2")
    with pytest.raises(ValueError, match=r"sweep file .*sweep\.json is not readable JSON"):
        read_sweep(base)


def test_whole_files_land_whole(base):
    fs, root = resolve(base, "test")
    files = WholeFiles(fs, root)
    files.write("a.bin", b"bytes")
    files.write("sub/b.bin", lambda f: (f.write(b"part 1, "), f.write(b"part 2")))
    files.clear()
    assert files_under(base) == ["a.bin", "sub/b.bin"]
    assert fs.cat(f"{root}/sub/b.bin") == b"part 1, part 2"


def test_a_failed_write_leaves_no_temp_and_no_partial_file(base):
    fs, root = resolve(base, "test")
    files = WholeFiles(fs, root)
    files.write("old.bin", b"old")

    def half_then_fail(f):
        f.write(b"half of it")
        raise RuntimeError("disk on fire")

    for name in ("new.bin", "old.bin"):
        with pytest.raises(RuntimeError, match="disk on fire"):
            files.write(name, half_then_fail)
    assert [f for f in files_under(base) if f.startswith(f"{TMP}/")] == []  # the temp file is gone
    assert not fs.exists(f"{root}/new.bin")  # never a partial final file
    assert fs.cat(f"{root}/old.bin") == b"old"  # an existing file is left as it was


def test_run_reads_what_the_sink_wrote(base):
    sink = ShardSink(base)
    items = [{"key": f"k{i}", "image": b"\x89PNG %d" % i, "dns_image": b"DNS %d" % i if i == 1 else None,
              "record": {"id": f"k{i}", "prompt": f"prompt {i}", "seed": i, "method": "cfg", "clip_score": 0.5 * i}}
             for i in range(3)]
    items.append({"key": "bad", "error": "boom", "record": {"id": "bad", "prompt": "p", "seed": 9, "method": "cfg"}})
    run = Run(base, "cfg")
    assert not run.is_finished
    with pytest.raises(ValueError, match=r"run cfg \(.*\) has no index\.parquet"):
        run.rows()
    sink.write_shard(0, items[:2], "png")
    sink.write_shard(1, items[2:], "png")
    sink.write_index()
    sink.write_manifest({"config": {"method": "cfg"}})
    sink.finish()

    run = Run(base)
    assert run.is_finished and run.manifest() == {"config": {"method": "cfg"}}
    assert [s.rsplit("/", 1)[1] for s in run.shards()] == ["shard-00000.tar", "shard-00001.tar"]
    rows = run.rows()
    assert list(rows) == ["k0", "k1", "k2", "bad"] and rows["bad"]["status"] == "failed"
    assert rows["k2"]["record"]["clip_score"] == 1.0 and rows["k2"]["shard"] == 1
    assert list(run.index_frame()["key"]) == list(rows)
    assert run.image("k2") == b"\x89PNG 2" and run.image("bad") is None and run.image("nope") is None
    assert run.dns_image("k1") == b"DNS 1" and run.dns_image("k0") is None and run.has_dns
    assert run.record("k0")["prompt"] == "prompt 0"
    assert run.read_many(["k0", "k2", "bad"], ["png"]) == {"k0": b"\x89PNG 0", "k2": b"\x89PNG 2"}
    assert sorted(run.members()["k1"]) == ["dns.png", "json", "png", "txt"]
