"""An output that fails mid-run leaves no partial file, and a rerun of the same command completes.
(The faults on real Ray, killed actors, a removed node and a stopped submitted job, are in
tests/test_ray.py.)"""

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

from jobutil import FAST, PROMPTS, run_job


class FailingMemoryFS(MemoryFileSystem):
    """memory:// that starts refusing writes after `budget` file opens for writing (a full disk)."""

    protocol = ("failmem",)
    budget = None

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(str(path).removeprefix("failmem://"))

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode and FailingMemoryFS.budget is not None:
            if FailingMemoryFS.budget <= 0:
                raise OSError(28, "No space left on device", path)
            FailingMemoryFS.budget -= 1
        return super()._open(path, mode, **kwargs)


def test_output_that_fails_mid_run_leaves_no_partial_file_and_the_rerun_completes(tmp_path, capsys):
    fsspec.register_implementation("failmem", FailingMemoryFS, clobber=True)
    fs = fsspec.filesystem("memory")
    args = ["--prompts", PROMPTS, "--config", FAST, "--samples-per-shard", 1, "--set", "steps=2"]
    try:
        FailingMemoryFS.budget = 6  # the probe, the manifest, then two shards (index + tar each)
        assert run_job(*args, "--out", "failmem://full/run") == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: writing to --out failmem://full/run failed") and "No space left" in err
        assert "rerun the same command" in err
        names = [p.rsplit("/", 1)[-1] for p in fs.find("/full/run")]
        finals = [n for n in names if n.startswith("shard-") and n.endswith(".tar")]
        assert 1 <= len(finals) < 4
        for path in fs.find("/full/run"):
            if path.endswith(".tar") and "/_tmp/" not in path:
                assert fs.cat_file(path)[257:262] == b"ustar"  # whatever has a final name is a whole tar
        FailingMemoryFS.budget = None  # space again: the same command resumes and completes
        assert run_job(*args, "--out", "failmem://full/run") == 0
        assert "resuming" in capsys.readouterr().err
        assert len([p for p in fs.find("/full/run") if p.endswith(".tar") and "/_tmp/" not in p]) == 4
    finally:
        FailingMemoryFS.budget = None
        if fs.exists("/full"):
            fs.rm("/full", recursive=True)
