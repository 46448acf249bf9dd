"""Property-based fuzzing of the command line and of suite files (hypothesis): whatever the
arguments, ``privbench`` exits with 0, 1 or 2, never prints a traceback, and leaves nothing
half-written in its workspace (no staging files, every run folder whole, every stored entry
passing its digest check).

The argument grammar mixes valid values (small, so that a run that is accepted trains a tiny
pool in a second) with the mistakes users make: wrong types, negative and huge numbers,
non-finite floats, unknown names, paths that are files, folders or missing, bytes that are not
UTF-8. Each example runs in this process (a subprocess would spend its second importing torch).
"""

from __future__ import annotations

import os
import shutil
import string
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from privbench.engine.store import Workspace
from privbench.engine.verify import verify_workspace

pytestmark = pytest.mark.usefixtures("fresh_registry")

SETTINGS = settings(
    max_examples=int(os.environ.get("PRIVBENCH_FUZZ_EXAMPLES", "50")),
    deadline=None,
    derandomize=True,  # the same examples every run: CI failures reproduce
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

numbers = st.one_of(
    st.sampled_from(["1", "2", "0", "-1", "3.5", "1e308", "inf", "nan", "-0", "true", "x", ""]),
    st.integers(-(10**22), 10**22).map(str),
)
# Counts of work (epochs, batch size) stay small: a huge valid one is a long run, not a bug.
work = st.sampled_from(["1", "2", "0", "-1", "3.5", "1e308", "inf", "nan", "true", "x", "", "-0"])
floats = st.one_of(
    st.sampled_from(["0.05", "0", "-1", "inf", "-inf", "nan", "1e308", "1e-320", "abc"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
words = st.one_of(
    st.sampled_from(["loss", "lira", "none", "dp-sgd", "small-cnn", "digits", "mlp", "cpu"]),
    st.sampled_from(["meta", "cuda:abc", "mps", "no-such-plugin", "../..", "a=b", "=", "\u00e9"]),
    st.text(string.printable, max_size=8),
)
paths = st.sampled_from(["FILE", "DIR", "MISSING", "FILE/under", "BADUTF8", "EMPTY"])
workspaces = st.sampled_from(["WS", "WS", "FILE", "FILE/under", "BADDB"])
"""Where ``-w`` points: a fresh folder (twice as likely), a file, a path under a file, or a
workspace whose database is garbage."""

RUN_FLAGS = {
    "--epochs": work, "--shadows": numbers, "--population": numbers, "--targets": numbers,
    "--batch-size": work, "--seed": numbers, "--lr": floats, "--momentum": floats,
    "--weight-decay": floats, "--attack": words, "--defense": words, "--model": words,
    "--dataset": words, "--device": words, "--augment": words, "--optimizer": words,
    "--attack-opt": words, "--model-opt": words, "--defense-opt": words, "--preset": words,
    "--target": paths, "--members": paths, "--slice": words, "--data-root": paths,
}  # fmt: skip


@st.composite
def run_arguments(draw: st.DrawFn) -> list[str]:
    """``privbench run`` with a tiny valid base that drawn flags override or break."""
    args = ["run", "-q", "--epochs", "1", "--population", "40", "--shadows", "1"]
    for flag in draw(st.lists(st.sampled_from(sorted(RUN_FLAGS)), max_size=4)):
        args += [flag, draw(RUN_FLAGS[flag])]
    return [*args, "-w", draw(workspaces)]


@st.composite
def other_arguments(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(["runs", "show", "leaderboard", "store", "new-plugin",
                                    "plugins", "bench", "report"]))  # fmt: skip
    if command == "runs":
        return ["runs", "--limit", draw(numbers)]
    if command == "show":
        return ["show", draw(st.one_of(words, paths))]
    if command == "leaderboard":
        args = ["leaderboard", "--format", draw(st.sampled_from(["md", "csv", "json", "html",
                                                                  "xml"]))]  # fmt: skip
        if draw(st.booleans()):
            args += ["-o", draw(paths)]
        return args + (["--rank-by", draw(words)] if draw(st.booleans()) else [])
    if command == "store":
        return ["store", "verify"] + (["--repair"] if draw(st.booleans()) else [])
    if command == "new-plugin":
        return ["new-plugin", draw(words), "-d", draw(paths)]
    if command == "plugins":
        return ["plugins"] + (["--check"] if draw(st.booleans()) else [])
    if command == "report":
        return ["report", draw(st.one_of(words, paths))]
    return ["bench", draw(paths), "--plan"]


PLACEHOLDERS = {"FILE", "DIR", "MISSING", "BADUTF8", "EMPTY", "WS", "BADDB"}


def _materialise(args: list[str], root: Path) -> list[str]:
    """Replace the path placeholders by real paths of each kind under *root*."""
    (root / "FILE").write_text("not a model\n")
    (root / "DIR").mkdir(exist_ok=True)
    (root / "BADUTF8").write_bytes(b"\xff\xfe\x00[suite]\n")
    (root / "EMPTY").write_bytes(b"")
    (root / "BADDB").mkdir(exist_ok=True)
    (root / "BADDB" / "privbench.db").write_bytes(b"SQLite format 3\x00" + b"\x13" * 500)
    return [str(root / arg) if arg.split("/")[0] in PLACEHOLDERS else arg for arg in args]


def _nothing_half_written(workspace: Path) -> None:
    if not workspace.is_dir() or workspace.name == "BADDB":
        return
    staging = [p for p in workspace.rglob(".*") if "quarantine" not in p.parts]
    assert staging == [], f"left half-written: {staging}"
    runs = workspace / "runs"
    for folder in runs.iterdir() if runs.is_dir() else ():
        assert (folder / "results.json").is_file(), f"run folder without results: {folder}"
    if (workspace / "models").is_dir() or (workspace / "privbench.db").is_file():
        report = verify_workspace(Workspace(workspace))
        assert report.ok, [finding.line for finding in report.problems]


def _check(capsys: pytest.CaptureFixture[str], args: list[str], workspace: Path) -> None:
    if "-w" in args:
        workspace = Path(args[args.index("-w") + 1])
    elif _takes_workspace(args):
        args = [*args, "-w", str(workspace)]
    code, out, err = run_cli(capsys, *args)
    event(f"{args[0]}: exit {code}")  # --hypothesis-show-statistics: is every outcome reached?
    assert code in (0, 1, 2), (args, code, err[-500:])
    assert "Traceback" not in out + err, (args, err[-2000:])
    if code == 2:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert lines, (args, "exit 2 without a message")
    _nothing_half_written(workspace)


def _takes_workspace(args: list[str]) -> bool:
    return args[0] in {"run", "runs", "show", "leaderboard", "store", "bench", "report"}


@SETTINGS
@given(args=run_arguments())
def test_privbench_run_never_tracebacks(capsys, tmp_path_factory, args):
    root = tmp_path_factory.mktemp("fuzz-run")
    _check(capsys, _materialise(args, root), root / "ws")


@SETTINGS
@given(args=other_arguments(), where=st.sampled_from(["empty", "one run", "BADDB", "FILE"]))
def test_every_other_command_never_tracebacks(capsys, tmp_path_factory, args, where, clean_ws):
    root = tmp_path_factory.mktemp("fuzz-cmd")
    args = _materialise(args, root)
    workspace = root / "ws"
    if where == "one run":  # a finished run, so that runs/show/leaderboard have data
        shutil.copytree(clean_ws, workspace)
    elif where in ("BADDB", "FILE"):
        workspace = root / where
    _check(capsys, args, workspace)


@pytest.fixture(scope="module")
def clean_ws(tmp_path_factory) -> Path:
    import privbench

    root = tmp_path_factory.mktemp("seeded") / "ws"
    privbench.audit(epochs=1, population=40, shadows=1, workspace=root, device="cpu")
    return root


SUITE_KEYS = {
    "suite": {"name": st.one_of(words, st.integers()), "seeds": st.lists(st.integers(-2, 2)),
              "shadows": st.one_of(st.integers(-1, 2), st.booleans(), st.floats(), words),
              "population": st.one_of(st.integers(-5, 60), st.booleans(), st.just(2.5)),
              "targets": st.one_of(st.integers(-1, 3), st.text(max_size=3)),
              "paired": st.one_of(st.booleans(), st.integers(0, 1), words),
              "memorization": st.one_of(st.booleans(), words)},
    "recipe": {"epochs": st.one_of(st.integers(-1, 2), st.booleans(), st.floats(), words),
               "lr": st.one_of(st.floats(), st.integers(), words),
               "batch_size": st.one_of(st.integers(-1, 64), st.booleans())},
}  # fmt: skip


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@st.composite
def suite_texts(draw: st.DrawFn) -> str:
    lines = []
    for table, keys in SUITE_KEYS.items():
        lines.append(f"[{table}]")
        for key in draw(st.lists(st.sampled_from(sorted(keys)), unique=True)):
            lines.append(f"{key} = {_toml_value(draw(keys[key]))}")
    for table in ("datasets", "models", "defenses", "attacks"):
        for name in draw(st.lists(words, max_size=2)):
            lines += [f"[[{table}]]", f"name = {_toml_value(name)}"]
    text = "\n".join(lines) + "\n"
    mangle = draw(st.integers(0, 9))
    if mangle == 0:  # now and then, not TOML at all
        text = draw(st.text(max_size=40))
    elif mangle == 1:  # or not UTF-8
        return (text.encode("utf-8", "surrogatepass") + b"\xff\xfe").decode("latin-1")
    return text


@SETTINGS
@given(text=suite_texts())
def test_suite_files_never_traceback(capsys, tmp_path_factory, text):
    root = tmp_path_factory.mktemp("fuzz-suite")
    suite = root / "suite.toml"
    data = text.encode("latin-1") if text.endswith("\xff\xfe") else text.encode(
        "utf-8", "surrogatepass"
    )  # fmt: skip
    suite.write_bytes(data)
    _check(capsys, ["bench", str(suite), "--plan"], root / "ws")
