"""The guides do not lie: every Python block of the README and of `docs/` runs, page by page.

The blocks of one page run in order in one namespace, in a temporary folder. A block whose
first line is `# not run (<reason>)` is shown to readers but skipped (it needs data that tests
may not read); `# runs on: tensorflow, jax` limits a block to the backends it names.
"""

import re
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
RUNS_ON = re.compile(r"#\s*runs on:\s*([a-z,\s]+)")


def python_blocks(page):
    """The Python blocks of a Markdown page that run under the current backend, in order."""
    blocks = []
    for code in BLOCK.findall(page.read_text()):
        first = code.split("\n", 1)[0]
        if first.startswith("# not run"):
            continue
        backends = RUNS_ON.match(first)
        if backends and keras.backend.backend() not in re.split(r"[,\s]+", backends[1]):
            continue
        blocks.append(code)
    return blocks


def test_every_page_is_found():
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/index.md", "docs/guides/pruning.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip("no Python block runs on this backend")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for number, code in enumerate(blocks, 1):
        exec(compile(code, f"{page.name}[block {number}]", "exec"), namespace)
