"""Bad input, table-driven: every case ends with exit code 2, one `error: ...` line that names the
input (the file, and line or row, where there is one) and what to do, and nothing written."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobutil import FAST, PROMPTS
from jobutil import run_job as _run_job


def run_job(*args) -> int:
    """The job's exit status, whether main() returns it or argparse exits with it."""
    try:
        return _run_job(*args)
    except SystemExit as exc:
        return exc.code

OK = '{"prompt": "a red cube"}\n'


def parquet(rows):
    def write(path):
        pq.write_table(pa.table(rows), path)
    return write


# (case id, prompts file name, its content (str, bytes, or a writer), extra arguments, message)
CASES = [
    ("empty file", "p.jsonl", "", [], "holds no prompts"),
    ("header only csv", "p.csv", "prompt,category\n", [], "holds no prompts"),
    ("header only tsv", "p.tsv", "Prompt\tCategory\tChallenge\tNote\n", [], "holds no prompts"),
    ("bom only", "p.jsonl", "\ufeff", [], "holds no prompts"),
    ("crlf blank lines", "p.txt", "\r\n\r\n  \r\n", [], "holds no prompts"),
    ("nul byte", "p.txt", "a red\x00 cube\n", [], "line 1: the prompt holds a NUL byte"),
    ("not utf-8", "p.txt", b"caf\xe9 au lait\n", [], "is not UTF-8 text"),
    ("100k-character prompt", "p.txt", "a" * 100_000 + "\n", [], "line 1: the prompt has 100,000 characters"),
    ("non-string prompt", "p.jsonl", '{"prompt": 5}\n', [], 'line 1: each line must be an object with a string "prompt"'),
    ("nested json prompt", "p.jsonl", '{"prompt": {"text": "a"}}\n', [], 'line 1: each line must be an object'),
    ("a json list line", "p.jsonl", "[1, 2]\n", [], 'line 1: each line must be an object'),
    ("broken json", "p.jsonl", OK + '{"prompt": "b"\n', [], "line 2 is not valid JSON"),
    ("null prompt in parquet", "p.parquet", parquet({"caption": ["a", None]}), [], "row 2: the prompt is empty"),
    ("blank prompt in csv", "p.csv", "prompt\nok\n  \n x\n", [], None),  # blank rows are skipped: runs
    ("negative seed", "p.jsonl", '{"prompt": "a", "seed": -1}\n', [], "line 1: seed must be a non-negative integer"),
    ("seed over 2^63", "p.jsonl", '{"prompt": "a", "seed": 18446744073709551615}\n', [], "below 2^63"),
    ("id with a slash", "p.jsonl", '{"prompt": "a", "id": "../../etc/x"}\n', [], "may only hold letters"),
    ("id ..", "p.jsonl", '{"prompt": "a", "id": ".."}\n', [], "prompt id '..' may only hold"),
    ("id with dots", "p.jsonl", '{"prompt": "a", "id": "a.b"}\n', [], "prompt id 'a.b' may only hold"),
    ("id with spaces", "p.jsonl", '{"prompt": "a", "id": "a b"}\n', [], "prompt id 'a b' may only hold"),
    ("same id, other text", "p.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', [],
     "duplicate sample 'x_0'"),
    ("ragged csv row", "p.csv", "prompt,category\na,b,c\n", [], "line 2 has 3 cells but the header has 2"),
    ("unknown columns", "p.csv", "sentence,category\na,b\n", [], "unknown column layout"),
    ("unknown extension", "p.xlsx", "prompt\n", [], "unknown extension '.xlsx'"),
    ("non-string negative", "p.jsonl", '{"prompt": "a", "negative_prompt": 5}\n', [], "negative_prompt must be text"),
    ("np without negatives", "p.jsonl", OK, ["--method", "np"], "needs a negative_prompt for every prompt"),
    ("unknown method", "p.jsonl", OK, ["--method", "cfgg"], "argument --method: invalid choice: 'cfgg'"),
    ("bad --set", "p.jsonl", OK, ["--set", "nonsense"], "expected KEY=VALUE"),
    ("unknown --set key", "p.jsonl", OK, ["--set", "answer.kk=3"], "answer.kk: Extra inputs are not permitted"),
    ("wrong --set type", "p.jsonl", OK, ["--set", "steps=many"], "steps: Input should be a valid integer"),
    ("bad --seeds", "p.jsonl", OK, ["--seeds", "-1"], "--seeds must be a count N"),
    ("unknown scorer", "p.jsonl", OK, ["--config", str(FAST), "--set", "scores=[clip,pickscor]"],
     "scores: unknown scorer 'pickscor'; known: clip, pickscore, hps"),
    ("scorer weights neither a dir nor a hub id", "p.jsonl", OK,
     ["--config", str(FAST), "--set", "scores=[hps]", "--set", "scorers.hps.model=/no/such/hps"],
     "scorer hps: model '/no/such/hps' is neither a local directory nor a hub id"),
    ("scorer weights that do not load", "p.jsonl", OK,
     ["--config", str(FAST), "--set", "scores=[clip,pickscore]", "--set", "scorers.pickscore.model=nobody/no-such-model"],
     "scorer pickscore: could not load 'nobody/no-such-model'"),
    ("unknown scorer setting", "p.jsonl", OK, ["--config", str(FAST), "--set", "scorers.hps.modle=x"],
     "scorers.hps.modle: Extra inputs are not permitted"),
    ("size not a multiple of the VAE factor", "p.jsonl", OK, ["--config", str(FAST), "--set", "height=60"],
     "height must be a positive multiple of the VAE factor 8"),
]


def write(path, content):
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def assert_refused(capsys, out, message, *names):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], (message, lines[0])
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    assert not out.exists(), "nothing may be written"


@pytest.mark.parametrize("case,name,content,extra,message", CASES, ids=[c[0] for c in CASES])
def test_bad_prompts_and_arguments(tmp_path, capsys, case, name, content, extra, message):
    prompts = tmp_path / name
    write(prompts, content)
    out = tmp_path / "out"
    code = run_job("--prompts", prompts, "--out", out, *(extra or ["--config", str(FAST)]))
    if message is None:  # the control case: this one is fine
        assert code == 0
        return
    assert code == 2
    file_errors = not any(a.startswith("--") and a not in ("--config",) for a in extra)
    assert_refused(capsys, out, message, *([prompts] if file_errors and "--config" not in extra else []))


def test_missing_prompts_file(tmp_path, capsys):
    assert run_job("--prompts", tmp_path / "nope.jsonl", "--out", tmp_path / "out") == 2
    assert_refused(capsys, tmp_path / "out", "does not exist", tmp_path / "nope.jsonl")


def test_out_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--out", blocker) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and str(blocker) in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a directory"


def test_unreachable_fsspec_url(tmp_path, capsys):
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--out", "nosuchproto://bucket/run") == 2
    assert "is not a usable fsspec URL" in capsys.readouterr().err


def test_config_with_a_wrong_type(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("guidance_scale: high\n")
    assert run_job("--prompts", PROMPTS, "--config", config, "--out", tmp_path / "o") == 2
    assert_refused(capsys, tmp_path / "o", "guidance_scale: Input should be a valid number", config)


@pytest.mark.parametrize("negatives,message", [
    ('{"id": "nobody_0", "negative_prompt": "x"}\n', "unknown id 'nobody_0'"),
    ("", "has no line for 4 sample(s)"),
    ('{"id": "fox_0", "negative_prompt": "x"}\n' * 2, "duplicate id 'fox_0'"),
], ids=["unknown id", "missing ids", "duplicate id"])
def test_bad_negatives_file(tmp_path, capsys, negatives, message):
    path = tmp_path / "negatives.jsonl"
    path.write_text(negatives)
    assert run_job("--prompts", PROMPTS, "--config", FAST, "--negatives", path, "--out", tmp_path / "o") == 2
    assert_refused(capsys, tmp_path / "o", message, path)


def test_there_are_at_least_thirty_cases():
    refused = [c for c in CASES if c[4] is not None]
    assert len(refused) + 4 + 3 >= 30  # the table, the four single tests, the negatives table
