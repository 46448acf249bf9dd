"""benchmarks/gpu_check.sh, the GPU check in one command, checked where there is no GPU: its
no-CUDA path, its dry run, the flags it passes to each script it calls (parsed by each script's
own parser), the report it writes (with a stand-in interpreter that plays a CUDA machine), and
the Markdown tables of the benchmarks it calls."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ("gpu-tests", "curvature", "shadow-digits", "shadow-fashion", "dp", "e2e", "run")
STEP_LINE = re.compile(r"^(?P<name>[a-z0-9-]+) \(timeout (?P<timeout>\d+) s\): (?P<command>.+)$")
SKIP_LINE = re.compile(r"^(?P<name>[a-z0-9-]+): skipped: (?P<reason>.+)$")


def run_check(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dry_run(tmp_path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The dry run's steps: {name: argv} for those it would run, {name: reason} for skips."""
    result = run_check(cwd=tmp_path, env={"GPU_CHECK_DRY_RUN": "1", "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpu_check: dry run"), lines
    steps, skips = {}, {}
    for line in lines[1:]:
        if match := STEP_LINE.match(line):
            steps[match["name"]] = shlex.split(match["command"])
        elif match := SKIP_LINE.match(line):
            skips[match["name"]] = match["reason"]
        else:
            pytest.fail(f"a dry-run line that is neither a step nor a skip: {line!r}")
    assert list(tmp_path.iterdir()) == [], "the dry run wrote something"
    return steps, skips


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in *text* as rows of cells (separator rows checked and left out);
    fails on a table whose rows differ in column count or lack the separator."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            assert len(block) >= 3, f"a table without rows: {block}"
            assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", block[1]), f"no separator: {block[1]}"
            rows = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in block]
            widths = {len(row) for row in rows}
            assert len(widths) == 1, f"rows of different widths {widths}: {block}"
            tables.append([rows[0], *rows[2:]])
            block = []
    return tables


def test_the_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(SCRIPT, os.X_OK), "gpu_check.sh is not executable"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing():
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_without_cuda_it_says_so_in_one_line_and_writes_nothing(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too.
    env = {"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    result = run_check("--out", str(tmp_path / "report.md"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gpu_check: no CUDA device here")
    assert "torch.cuda.is_available() is False" in lines[0]
    assert lines[0].endswith("nothing to check")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_argument_is_a_usage_error(tmp_path):
    result = run_check("--outt", "x.md", cwd=tmp_path, env={"GPU_CHECK_DRY_RUN": "1"})
    assert result.returncode == 2
    assert "unknown argument '--outt'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_dry_run_lists_every_step_on_cuda(tmp_path):
    steps, skips = dry_run(tmp_path)
    assert set(steps) | set(skips) >= set(STEPS)
    assert not set(steps) & set(skips)
    for must_run in ("gpu-tests", "curvature", "shadow-digits", "e2e", "run"):
        assert must_run in steps, skips.get(must_run)
    pytest_argv = ["-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py"]
    assert steps["gpu-tests"] == [sys.executable, *pytest_argv]
    for name, argv in steps.items():
        if name != "gpu-tests":
            assert argv[argv.index("--device") + 1] == "cuda", (name, argv)
    assert steps["curvature"][1:3] == ["benchmarks/curvature_throughput.py", "--device"]
    assert "--markdown" in steps["curvature"]
    assert "--markdown" in steps["e2e"]
    assert steps["run"][1:4] == ["-m", "privbench", "run"]
    if (ROOT / "benchmarks" / "dp_throughput.py").exists():
        assert steps["dp"][1] == "benchmarks/dp_throughput.py"
    else:
        assert "dp" in skips and "not in this tree" in skips["dp"]


def test_the_dry_run_fits_the_budget_at_under_8_minutes(tmp_path):
    """Each step's timeout may exceed what is left: the budget caps them, and must itself
    stay under 8 minutes with the probe and every step's kill grace."""
    text = SCRIPT.read_text()
    budget = int(re.search(r"budget=\$\{GPU_CHECK_BUDGET:-(\d+)\}", text)[1])
    assert budget + 10 < 8 * 60
    result = run_check(cwd=tmp_path, env={"GPU_CHECK_DRY_RUN": "1"})
    assert f"budget {budget} s" in result.stdout.splitlines()[0]


PARSE_ONLY = textwrap.dedent(
    """
    import argparse, json, runpy, sys

    class Parsed(Exception):
        pass

    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise Parsed(vars(original(self, args, namespace)))

    argparse.ArgumentParser.parse_args = parse_only
    scripts, cli = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    answers = {}
    for script, *args in scripts:
        sys.argv = [script, *args]
        try:
            runpy.run_path(script, run_name="__main__")
        except Parsed as parsed:
            answers[script] = {k: str(v) for k, v in parsed.args[0].items()}
        except SystemExit as exit:
            answers[script] = f"exit {exit.code}"
        else:
            answers[script] = "ran without parsing its arguments"

    import click
    import typer.main
    from privbench.cli import build_app
    from privbench.plugins import get_registry

    group = typer.main.get_command(build_app(get_registry()))
    context = click.Context(group, info_name="privbench")
    for args in cli:
        name, *rest = args
        command = group.get_command(context, name)
        try:
            answers[" ".join(args)] = command.make_context(name, rest, parent=context).params
        except Exception as err:
            answers[" ".join(args)] = f"{type(err).__name__}: {err}"
    print(json.dumps(answers, default=str))
    """
)


def parse_only(scripts: list[list[str]], cli: list[list[str]]) -> dict[str, object]:
    """Each benchmark script's own argparse parser, and privbench's click commands, given the
    arguments: what they parsed to, or why not (nothing runs past the parsing)."""
    result = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY, json.dumps(scripts), json.dumps(cli)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_every_script_it_calls_accepts_the_flags_it_passes(tmp_path):
    steps, _ = dry_run(tmp_path)
    scripts = [argv[1:] for argv in steps.values() if argv[1].startswith("benchmarks/")]
    cli = [argv[3:] for argv in steps.values() if argv[1:3] == ["-m", "privbench"]]
    assert len(scripts) >= 3 and cli
    answers = parse_only(scripts, cli)
    for script, *args in scripts:
        parsed = answers[script]
        assert isinstance(parsed, dict), f"{script} {shlex.join(args)}: {parsed}"
        assert parsed["device"] == "cuda"
        if "--markdown" in args:
            assert parsed["markdown"] == "True"
    for args in cli:
        parsed = answers[" ".join(args)]
        assert isinstance(parsed, dict), f"privbench {shlex.join(args)}: {parsed}"
        assert parsed["device"] == "cuda"
    # The check can fail: a flag a script lacks, or a bad value, is reported as such.
    wrong = parse_only(
        [["benchmarks/curvature_throughput.py", "--device", "cuda", "--markdownn"]],
        [["run", "--devicee", "cuda"]],
    )
    assert wrong["benchmarks/curvature_throughput.py"] == "exit 2"
    assert wrong["run --devicee cuda"].startswith("NoSuchOption")


def test_the_gpu_tests_it_runs_are_collected():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "gpu", "tests/test_gpu.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [line for line in result.stdout.splitlines() if "tests/test_gpu.py::" in line]
    assert len(collected) >= 3, result.stdout


FAKE_PYTHON = """#!/usr/bin/env bash
# Plays an interpreter on a CUDA machine: the probe's answers, then each step's output.
if [[ $1 == - ]]; then
    cat >/dev/null
    echo "UserWarning: a line of torch's that is no answer" >&2
    printf 'cuda=yes\\nname=Fake GPU 80GB\\ncount=1\\nmemory=80 GiB\\ntorch=9.9.9+fake\\n'
    printf 'cuda_version=12.9\\ncudnn=91000\\npython=3.11.0\\nprivbench=%s\\n' "$PRIVBENCH"
    exit 0
fi
echo "$*" >>"$LOG"
case "$*" in
    *curvature_throughput.py*)
        printf 'what ran\\n\\n| form | s |\\n|---|---:|\\n| exact | 1 |\\n' ;;
    *e2e.py*) echo "partial e2e output"; echo "e2e exploded" >&2; exit 3 ;;
    *) echo "ran $*" ;;
esac
"""


@pytest.fixture
def fake_cuda(tmp_path):
    """PATH and PYTHON for a stand-in CUDA machine (no nvidia-smi answers), and its log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(FAKE_PYTHON)
    nvidia_smi = bin_dir / "nvidia-smi"
    nvidia_smi.write_text("#!/bin/sh\nexit 1\n")
    for path in (python, nvidia_smi):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    env = {
        "PYTHON": str(python),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "LOG": str(log),
        "PRIVBENCH": "ok",
    }
    return env, log


def sections(report: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", report, flags=re.MULTILINE)
    return {title: body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_on_cuda_it_runs_every_step_reports_each_and_goes_on_after_a_failure(tmp_path, fake_cuda):
    env, log = fake_cuda
    (tmp_path / "here").mkdir()
    (tmp_path / "dry").mkdir()
    result = run_check("--out", "out/check.md", cwd=tmp_path / "here", env=env, timeout=60)
    report_path = tmp_path / "here" / "out" / "check.md"
    assert result.returncode == 1, result.stdout + result.stderr  # e2e failed
    report = report_path.read_text()
    assert report.startswith("# GPU check: Fake GPU 80GB\n")
    assert "torch 9.9.9+fake, CUDA 12.9" in report
    calls = log.read_text().splitlines()
    steps, skips = dry_run(tmp_path / "dry")
    assert len(calls) == len(steps)  # every step ran, the ones after e2e's failure too
    assert calls[-1].endswith(
        "benchmarks/curvature_throughput.py --device cuda --markdown --batch 1024"
    )
    parts = sections(report)
    assert len(parts) == len(steps) + len(skips) + 1  # and the summary
    date = re.compile(r"Fake GPU 80GB, torch 9\.9\.9\+fake, \d{4}-\d\d-\d\d \d\d:\d\d UTC: ")
    for title, body in parts.items():
        if title == "Summary":
            continue
        if body.strip().startswith("Skipped:"):
            continue
        command = re.search(r"^`(.+)`$", body, flags=re.MULTILINE)[1]
        assert command.startswith(env["PYTHON"]), (title, command)
        assert date.search(body), (title, body)
    curvature = next(b for t, b in parts.items() if t.startswith("Curvature scoring: "))
    assert re.search(r"UTC: passed, \d+\.\d s\.$", curvature, flags=re.MULTILINE)
    assert markdown_tables(curvature) == [[["form", "s"], ["exact", "1"]]]
    e2e = next(b for t, b in parts.items() if t.startswith("End to end, by stage"))
    assert "FAILED (exit 3)" in e2e
    assert "partial e2e output" in e2e and "e2e exploded" in e2e
    summary = markdown_tables(parts["Summary"])[0]
    assert summary[0] == ["step", "result", "seconds"]
    results = {row[0]: row[1] for row in summary[1:]}
    assert results["e2e"] == "FAILED (exit 3)"
    assert results["run"] == "passed"
    assert f"{len(steps) - 1} passed, 1 failed, {len(skips)} skipped" in parts["Summary"]
    assert result.stdout.splitlines()[-1].startswith(f"gpu_check: wrote {report_path}")


def test_a_spent_budget_skips_the_steps_and_says_why(tmp_path, fake_cuda):
    env, log = fake_cuda
    result = run_check(cwd=tmp_path, env={**env, "GPU_CHECK_BUDGET": "0"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not log.exists()
    report = (tmp_path / "gpu_check.md").read_text()
    assert "no time left in the 0 s budget" in sections(report)["GPU tests: tests/test_gpu.py"]


def test_cuda_without_privbench_is_an_error_that_says_so(tmp_path, fake_cuda):
    env, log = fake_cuda
    result = run_check(cwd=tmp_path, env={**env, "PRIVBENCH": "missing: no privbench"})
    assert result.returncode == 2
    assert "cannot import privbench (missing: no privbench)" in result.stderr
    assert not log.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "bin"]


def test_curvature_throughput_prints_a_markdown_table_on_the_cpu():
    command = [sys.executable, "benchmarks/curvature_throughput.py", "--device", "cpu"]
    command += ["--markdown", "--samples", "16", "--batch", "16", "--probes", "1"]
    command += ["--repeats", "1"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("small-cnn on 16 digits, batches of 16, 1 probes, ")
    (table,) = markdown_tables(result.stdout)
    header, *rows = table
    assert header[:4] == ["form", "passes it needs (the floor)", "seconds", "samples/s"]
    assert [row[0] for row in rows] == ["zero-order", "finite-difference", "exact"]
    for row in rows:
        assert float(row[3]) > 0 and float(row[5]) > 0
        assert row[-1].endswith("%")
    assert rows[0][6].endswith("x") and rows[1][6] == ""


def test_e2e_prints_its_stages_as_a_markdown_table(capsys):
    spec = importlib.util.spec_from_file_location("e2e", ROOT / "benchmarks" / "e2e.py")
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    stages = {"start-up and plan": 1.0, "training": 2.0, "attacks": 0.5}
    e2e.print_markdown("benchmarks/smoke.toml", "-j 2", ["cuda:0"], 4.0, stages)
    out = capsys.readouterr().out
    assert out.startswith("`privbench bench smoke.toml -j 2` on a cold store, runs on cuda:0")
    (table,) = markdown_tables(out)
    assert table[0] == ["stage", "seconds", "share"]
    assert table[1:] == [
        ["start-up and plan", "1.00", "25%"],
        ["training", "2.00", "50%"],
        ["attacks", "0.50", "12%"],
        ["the rest (data and model loading, writing results)", "0.50", "12%"],
        ["wall", "4.0", ""],
    ]
