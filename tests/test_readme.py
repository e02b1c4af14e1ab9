"""README.md stays truthful: its commands are the ones CI and the tests run."""

import json
import re
from pathlib import Path

from jobutil import read_run

from dnp_batch import load_pipeline
from dnp_batch.tiny import ensure_tiny

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quickstart_install_and_test_commands_are_what_ci_runs():
    quickstart = blocks("bash")[0].strip().splitlines()
    ci = (REPO / ".ci" / "run").read_text()
    install, job, tests = quickstart
    assert install in ci and tests in ci
    assert job == "python jobs/generate.py --prompts examples/prompts.jsonl --out out/"  # run by test_job.py


def test_every_other_bash_command_runs(tmp_path, monkeypatch):
    """Every command after the quick-start, run in order as written, with its out dirs in tmp: each
    line's script's own `main()` in this process, given the line's arguments (as the job tests run
    them; a fresh interpreter per line only repeated ~6 s of imports each). The jobs run on the
    in-process distributor (`--distributor local` added): a private Ray costs ~40 s of start-up a
    job on 2 cores, and the Ray distributor's bytes equal the local one's (tests/test_ray.py, which
    also runs the quick-start and `ray job submit` on Ray)."""
    import importlib.util
    import shlex

    monkeypatch.chdir(REPO)
    for block in blocks("bash")[1:]:
        for line in block.strip().splitlines():
            assert line.startswith(("python jobs/generate.py ", "python jobs/sweep.py ", "python jobs/report.py ",
                                    "python jobs/pairs.py ", "python jobs/verify.py ")), \
                f"no test runs this README command: {line}"
            script, *args = shlex.split(re.sub(r"\b(out-[a-z]+)/", lambda m: f"{tmp_path / m.group(1)}/", line))[1:]
            if script in ("jobs/generate.py", "jobs/sweep.py"):
                args += ["--distributor", "local"]
            spec = importlib.util.spec_from_file_location(Path(script).stem + "_readme", REPO / script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            assert module.main(args) == 0, line
    assert len(read_run(tmp_path / "out-sd")) == 8  # and jobs/verify.py found it whole (exit 0)
    assert all("dns.png" in files for files in read_run(tmp_path / "out-auto").values())
    assert len(read_run(tmp_path / "out-dnp")) == 4
    assert (tmp_path / "out-sweep" / "report" / "index.html").exists()
    assert list((tmp_path / "out-pairs").glob("pairs-*.tar")) and (tmp_path / "out-pairs" / "pairs.parquet").exists()
    scored = json.loads((tmp_path / "out-scorepairs" / "pairs_manifest.json").read_text())
    assert scored["inputs"]["scorer_settings"]["weights"] == {"pickscore": 1.0, "hps": 0.5}
    assert (tmp_path / "out-answers" / "report" / "pickscore_vs_guidance.png").exists()


def test_library_example_runs_on_the_tiny_model(tmp_path, monkeypatch):
    """The README's Python example, with the hub id swapped for the tiny SDXL on CPU."""
    (code,) = blocks("python")
    tiny = str(ensure_tiny("sdxl"))
    code = code.replace('"stabilityai/stable-diffusion-xl-base-1.0", dtype="fp16", device="cuda"',
                        f"{tiny!r}, dtype='fp32', device='cpu'")
    assert tiny in code, "the README example no longer loads the model this test expects"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "fox.png").exists()
    assert namespace["out"].records[0]["nfe"] == 120
    assert isinstance(namespace["pipe"], type(load_pipeline(tiny)))


def test_readme_mentions_the_tiny_cli_and_bench():
    assert "python -m dnp_batch.tiny --kind sdxl --out DIR" in README  # tests/test_tiny.py runs it
    assert "python bench/nfe.py" in README  # tests/test_bench.py runs it
