"""Fixtures and helpers shared by several test modules (each module opts in to the fixtures)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from privbench.cli import main
from privbench.plugins import set_registry


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """The test sees the plugins of its own environment (``PRIVBENCH_PLUGINS``)."""
    set_registry(None)
    yield
    set_registry(None)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """For modules whose tensors are small (kernels of hundreds x hundreds, a reconstruction's
    candidates): on the two shared cores of a test machine a second intra-op thread mostly
    spins (measured 25x slower under load), so use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``privbench ARGS`` in-process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err
