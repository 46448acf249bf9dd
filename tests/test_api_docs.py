"""docs/api.md cannot rot: its Python blocks run here, in order, in one namespace, in a fresh
folder (so the page's relative workspace lands there), and the output it shows is checked."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)


@pytest.mark.usefixtures("fresh_registry")
def test_every_python_block_of_the_api_page_runs(tmp_path, monkeypatch):
    blocks = _blocks("python")
    assert len(blocks) >= 8, "docs/api.md lost its examples"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRIVBENCH_WORKSPACE", raising=False)
    # A module of its own, as a notebook's __main__ is: classes defined on the page resolve
    # their annotations through it.
    page = types.ModuleType("privbench_api_page")
    monkeypatch.setitem(sys.modules, page.__name__, page)
    namespace = page.__dict__
    printed = io.StringIO()
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"docs/api.md block {number}", "exec")
        with contextlib.redirect_stdout(printed):
            exec(code, namespace)
    # The table shown after the first block is what summary() printed.
    shown = _blocks("text")[0].splitlines()
    assert shown[0] in printed.getvalue(), (shown[0], printed.getvalue()[:400])
    assert "loss: AUC" in printed.getvalue()  # the custom callback of the progress section
    assert (tmp_path / "audit-workspace" / "privbench.db").is_file()
