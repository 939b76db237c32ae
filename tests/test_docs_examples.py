"""The ```python blocks of the core docs (and README's quick start) run as pasted.

Each file's blocks run in order in one namespace (a doc reads as one session), in a
temporary working directory; any ``test_*`` function a block defines is called too (the
docs show plugin authors' tests). A block is skipped only when the line before its fence
is ``<!-- docs-test: skip (why) -->``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

import lshcore
from lshcore import registry

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [
    "README.md",
    "docs/families.md",
    "docs/families_comparison.md",
    "docs/index.md",
    "docs/plugins.md",
    "docs/packaging.md",
]
EXAMPLE_PLUGIN = ROOT / "plugins" / "examples" / "lshcore-classic-minhash"
SKIP_MARK = re.compile(r"<!--\s*docs-test:\s*skip\b")
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` of every ```python block of a Markdown text."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        blocks.append((line, match.group(1), bool(SKIP_MARK.search(before))))
    return blocks


def test_block_extraction() -> None:
    text = (
        "intro\n```python\na = 1\n```\n\n```toml\nx = 2\n```\n"
        "<!-- docs-test: skip (needs a GPU) -->\n```python\nb = 2\n```\n"
    )
    assert python_blocks(text) == [(2, "a = 1\n", False), (10, "b = 2\n", True)]


@pytest.fixture
def example_plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example plugin importable and registered, as if it were pip-installed."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    registry.reset()
    if "classic_minhash" not in lshcore.families():  # not installed: register it at run time
        import lshcore_classic_minhash

        lshcore.register_plugin(lshcore_classic_minhash)
    yield
    registry.reset()
    sys.modules.pop("lshcore_classic_minhash", None)


@pytest.mark.parametrize("doc", DOC_FILES)
def test_doc_examples_run(
    doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example_plugin: Any
) -> None:
    path = ROOT / doc
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    runnable = [(line, code) for line, code, skipped in blocks if not skipped]
    if not runnable:
        pytest.skip(f"{doc} has no runnable python blocks")
    monkeypatch.chdir(tmp_path)  # examples that save files write here
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem}"}
    for line, code in runnable:
        before = set(namespace)
        try:
            exec(compile(code, f"{doc}:{line}", "exec"), namespace)
            for name in sorted(set(namespace) - before):
                if name.startswith("test_") and callable(namespace[name]):
                    namespace[name]()
        except Exception as exc:
            raise AssertionError(
                f"the python block at {doc}:{line} failed: {type(exc).__name__}: {exc}"
            ) from exc


def test_every_core_doc_is_checked() -> None:
    """The docs with python blocks are the ones this file runs (packaging.md has none)."""
    with_code = {d for d in DOC_FILES if python_blocks((ROOT / d).read_text(encoding="utf-8"))}
    assert with_code == set(DOC_FILES) - {"docs/packaging.md"}
