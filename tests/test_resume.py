"""Resume: a killed run, resumed, ends with exactly one copy of each sample, byte-identical to an
uninterrupted run; a different config is refused unless --overwrite."""

import os
import signal
import subprocess
import sys
import tarfile
import time

from jobutil import FAST, JOB, PROMPTS, REPO, index, read_run, run_job

ARGS = ["--prompts", PROMPTS, "--config", FAST, "--seeds", 4, "--samples-per-shard", 1, "--set", "steps=20"]


def pngs(out) -> dict[str, bytes]:
    return {key: files["png"] for key, files in read_run(out).items()}


def test_killed_run_resumes_to_the_same_bytes(tmp_path, capsys):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_job(*ARGS, "--out", whole) == 0
    assert len(pngs(whole)) == 16

    proc = subprocess.Popen([sys.executable, str(JOB), *map(str, ARGS), "--out", str(resumed), "--distributor",
                             "local"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(resumed.glob("shard-*.tar"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = sorted(resumed.glob("shard-*.tar"))
    assert 3 <= len(written) < 16, "the run should have been killed part-way"
    for tar in written:  # whatever a reader can see is a whole shard
        with tarfile.open(tar) as t:
            assert sorted(m.name.split(".", 1)[1] for m in t.getmembers()) == ["json", "png", "txt"]
    assert not (resumed / "index.parquet").exists()

    capsys.readouterr()
    assert run_job(*ARGS, "--out", resumed) == 0
    err = capsys.readouterr().err
    assert f"resuming: {len(written)} of 16 shards already written" in err
    assert pngs(resumed) == pngs(whole)  # read_run also asserts that no key appears twice
    assert sorted(r["key"] for r in index(resumed)) == sorted(pngs(whole))

    assert run_job(*ARGS, "--out", resumed, "--resume") == 0  # nothing left to do
    assert "resuming: 16 of 16 shards" in capsys.readouterr().err


def test_a_different_config_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "o"
    base = ["--prompts", PROMPTS, "--config", FAST, "--samples-per-shard", 2]
    assert run_job(*base, "--out", out) == 0
    before = pngs(out)
    assert run_job(*base, "--set", "answer.k=1", "--out", out) == 2
    assert "holds a run with a different config; pass --overwrite" in capsys.readouterr().err
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text(PROMPTS.read_text().splitlines()[0] + "\n")
    assert run_job("--prompts", fewer, *base[2:], "--out", out) == 2
    assert "different prompts, seeds or shard size" in capsys.readouterr().err
    assert pngs(out) == before

    assert run_job(*base, "--set", "answer.k=1", "--out", out, "--overwrite") == 0
    after = pngs(out)
    assert after.keys() == before.keys() and after != before
    assert all(r["record"].count('"k": 1') == 1 for r in index(out))


def test_resume_needs_a_run(tmp_path, capsys):
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--out", tmp_path / "o", "--resume") == 2
    assert "holds no run to resume" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
