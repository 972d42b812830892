"""The README's API example runs as written, and does what it says."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_api_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = README.read_text()
    section = text[text.index("**The API.**"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "example.py").write_text(code.group(1))  # a file, as a user's would be: buffers named from it
    results = runpy.run_path(str(tmp_path / "example.py"))["results"]
    assert [r.capture_size for r in results] == [1, 2, 4]  # type: ignore[attr-defined]
    assert all(r.violations[0].op == "_add_one" for r in results)  # type: ignore[attr-defined]
    assert (tmp_path / "results.json").is_file()
