"""The documentation a user who clones the repository gets: everything it cites is in the repo."""

import re
import subprocess

from jobutil import REPO


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if n.endswith((".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg"))
            and not n.startswith("models/")]


def test_nothing_cites_the_design_folder_outside_the_repo():
    offenders = [str(p.relative_to(REPO)) for p in tracked_text_files()
                 if re.search(r"\.\./shared|shared/design", p.read_text(encoding="utf-8", errors="replace"))
                 and p.name != "test_docs.py"]
    assert offenders == []


def test_every_docs_file_the_readme_and_code_cite_exists():
    cited = set()
    for p in tracked_text_files():
        cited |= set(re.findall(r"docs/[A-Za-z_]+\.md", p.read_text(encoding="utf-8", errors="replace")))
    assert "docs/METHODS.md" in cited
    assert [c for c in sorted(cited) if not (REPO / c).is_file()] == []
