"""The front door: privbench.audit gives what privbench run gives, results round-trip through
their files, progress reaches a log file while the run works, and every run flag has its
keyword argument."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import pytest
import torch
from conftest import run_cli

import privbench
from privbench.cli import run as cli_run
from privbench.plugins import Registry

SMALL = dict(population=200, shadows=3, epochs=5, seed=3)
FLAGS = ["--population", "200", "--shadows", "3", "--epochs", "5", "--seed", "3"]


@pytest.fixture
def captured(monkeypatch) -> list[privbench.AuditResult]:
    """The AuditResult objects privbench run prints, as the CLI held them."""
    results: list[privbench.AuditResult] = []
    original = cli_run.print_result
    monkeypatch.setattr(
        cli_run, "print_result", lambda result: (results.append(result), original(result))
    )
    return results


@pytest.mark.usefixtures("fresh_registry")
def test_audit_gives_the_numbers_of_privbench_run_with_the_same_flags(tmp_path, capsys, captured):
    code, out, err = run_cli(
        capsys, "run", *FLAGS, "-a", "loss", "-a", "lira", "--attack-opt", "lira.variant=offline",
        "--scorer", "logit-confidence", "-w", str(tmp_path / "cli"),
    )  # fmt: skip
    assert code == 0, err
    (from_cli,) = captured
    from_python = privbench.audit(
        attacks=["loss", "lira"],
        attack_options={"lira.variant": "offline"},
        scorers=["logit-confidence"],
        workspace=tmp_path / "python",
        **SMALL,
    )
    assert [a.name for a in from_python.attacks] == ["loss", "lira"]
    for ours, theirs in zip(from_python.attacks, from_cli.attacks, strict=True):
        assert ours.metrics == theirs.metrics and ours.options == theirs.options
        assert ours.per_target == theirs.per_target and ours.roc == theirs.roc
        assert ours.scores == theirs.scores
    assert from_python.utility == from_cli.utility
    assert from_python.scorers == from_cli.scorers
    assert from_python.spec == from_cli.spec
    # What the command printed after its progress lines is the result's summary, line for line.
    table = [line.rstrip() for line in str(from_cli).splitlines()]
    assert [line.rstrip() for line in out.splitlines()][-len(table) :] == table


@pytest.mark.usefixtures("fresh_registry")
def test_load_run_of_a_cli_run_returns_an_equal_result(tmp_path, capsys, captured):
    workspace = tmp_path / "ws"
    code, _, err = run_cli(capsys, "run", *FLAGS, "--memorization", "-w", str(workspace))
    assert code == 0, err
    (made,) = captured
    assert privbench.load_run(made.run_id, workspace=workspace) == made
    assert privbench.load_run("latest", workspace=workspace) == made
    assert privbench.load_run(made.path) == made
    assert privbench.load_run(made.path / "results.json") == made
    loaded = privbench.load_run(made.run_id[:12], workspace=workspace)
    assert loaded.memorization == made.memorization and loaded.path == made.path
    assert loaded.attacks[0].scores is not None and len(loaded.attacks[0].scores) == 4 * 200
    # privbench show reads it through the same function: the same table.
    code, out, _ = run_cli(capsys, "show", made.run_id, "-w", str(workspace))
    assert code == 0 and str(made).splitlines()[0] in out


def test_a_result_is_equal_only_to_the_same_result(tmp_path):
    result = privbench.audit(attacks=["loss"], workspace=tmp_path, **SMALL)
    other = privbench.audit(attacks=["loss"], workspace=tmp_path, **{**SMALL, "seed": 4})
    assert result == privbench.load_run(result.path)
    assert result != other
    changed = privbench.load_run(result.path)
    changed.attacks[0].scores.score[0] += 1.0
    assert changed != result


def test_a_changed_scores_file_is_refused_when_read(tmp_path):
    result = privbench.audit(attacks=["loss"], workspace=tmp_path, **SMALL)
    scores = result.path / "membership-scores.safetensors"
    data = bytearray(scores.read_bytes())
    data[-1] ^= 1
    scores.write_bytes(bytes(data))
    with pytest.raises(privbench.PrivbenchError, match="does not match the digest"):
        privbench.load_run(result.path)
    (result.path / "results.json").write_text("{not json")
    with pytest.raises(privbench.PrivbenchError, match="not a readable run record"):
        privbench.load_run(result.path)


def test_to_pandas_has_one_row_per_attack(tmp_path):
    result = privbench.audit(attacks=["loss", "confidence"], workspace=tmp_path, **SMALL)
    frame = result.to_pandas()
    assert list(frame["attack"]) == ["loss", "confidence"]
    for column in ("auc", "tpr_at_0_1_fpr", "tpr_at_1_fpr", "tpr_at_0_01_fpr", "epsilon_lower"):
        assert column in frame.columns
    assert frame.loc[0, "auc"] == result.attacks[0].metrics.auc
    assert frame.loc[1, "run_id"] == result.run_id


def test_to_pandas_without_pandas_names_the_extra(tmp_path, monkeypatch):
    result = privbench.audit(attacks=["loss"], workspace=tmp_path, **SMALL)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(privbench.PrivbenchError, match=r"pip install 'privbench\[pandas\]'"):
        result.to_pandas()


def test_per_sample_scores_are_the_attack_scores_of_each_target(tmp_path):
    result = privbench.audit(attacks=["loss"], workspace=tmp_path, targets=2, **SMALL)
    scores = result.attacks[0].scores
    assert len(scores) == 2 * 200 and set(scores.target.tolist()) == {0, 1}
    first = scores.for_target(0)
    assert first.member.sum() == 100  # model 0 trained on exactly half of the population
    # sample ids index the dataset's train split: the same 200 ids in each turn
    assert (np.sort(first.sample) == np.sort(scores.for_target(1).sample)).all()
    from privbench.analysis.metrics import compute_metrics

    assert compute_metrics(scores.score, scores.member) == result.attacks[0].metrics


def test_presets_work_from_python_and_what_is_given_wins(tmp_path):
    result = privbench.audit(
        preset="quick", attacks=["loss"], population=200, epochs=3, workspace=tmp_path
    )
    assert result.spec.models == 4 and result.spec.targets == 2
    assert result.spec.recipe.epochs == 3  # given: the preset's 10 does not apply
    assert result.notes == ("preset quick: --shadows 3 --targets 2 (flags given override it)",)
    with pytest.raises(privbench.OptionError, match="unknown preset 'quik'; did you mean 'quick'"):
        privbench.audit(preset="quik", workspace=tmp_path)


def test_bad_arguments_are_one_line_errors_before_any_work(tmp_path):
    cases: list[tuple[dict[str, Any], str]] = [
        ({"attacks": ["los"]}, "did you mean 'loss'"),
        ({"shadows": 2.5}, "--shadows"),
        ({"paired": "maybe"}, "expected true or false"),
        ({"epochs": 0}, "'epochs' must be >= 1"),
        ({"attacks": [object()]}, "must be a name"),
        ({"attack_options": {"temprature": 2}, "attacks": ["confidence"]}, "'temperature'"),
        ({"defense": ["none", "dp-sgd"]}, "give one defense"),
    ]
    for arguments, message in cases:
        with pytest.raises(privbench.PrivbenchError, match=message) as caught:
            privbench.audit(workspace=tmp_path / "ws", **arguments)
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "ws").exists()


@attrs.frozen
class _ScaledLoss:
    name: ClassVar[str] = "scaled-loss"
    description: ClassVar[str] = "the negated loss, scaled"
    access: ClassVar[privbench.Access] = privbench.Access.LOGITS
    min_shadows: ClassVar[int] = 0

    scale: float = 1.0

    def score(self, context: privbench.AttackContext) -> np.ndarray:
        logits = context.target.population_logits("none")
        loss = torch.nn.functional.cross_entropy(logits, context.population.y, reduction="none")
        return (-self.scale * loss).numpy()


@pytest.mark.usefixtures("fresh_registry")
def test_a_plugin_instance_built_in_python_is_an_attack(tmp_path):
    registry = Registry.from_environment()
    result = privbench.audit(
        attacks=[_ScaledLoss(scale=2.0), "loss"], workspace=tmp_path, registry=registry, **SMALL
    )
    mine, loss = result.attacks
    assert mine.name == "scaled-loss" and mine.options == {"scale": 2.0}
    assert mine.metrics == loss.metrics  # scaling by 2 keeps the loss attack's order exactly
    from privbench_plugins.attacks.loss import LossAttack

    assert privbench.audit(attacks=[LossAttack()], workspace=tmp_path, registry=registry,
                           **SMALL).attacks[0].metrics == loss.metrics  # fmt: skip

    @attrs.frozen
    class Impostor(_ScaledLoss):
        name: ClassVar[str] = "loss"

    with pytest.raises(privbench.PluginConflictError, match="already provided by plugin"):
        privbench.audit(attacks=[Impostor()], workspace=tmp_path, registry=registry, **SMALL)


def test_callbacks_hear_every_stage_in_order(tmp_path):
    heard: list[str] = []

    class Recorder:  # any object with some of the hooks
        def on_audit_start(self, spec, models, missing):
            heard.append(f"start {models} {missing}")

        def on_model_ready(self, index, trained):
            heard.append(f"model {index} {trained}")

        def on_attack_end(self, name, auc, seconds):
            heard.append(f"attack {name}")

        def on_audit_end(self, result):
            heard.append(f"end {result.run_id}")

    result = privbench.audit(attacks=["loss"], workspace=tmp_path, callback=Recorder(), **SMALL)
    assert heard == [
        "start 4 4",
        *(f"model {i} True" for i in range(4)),
        "attack loss",
        f"end {result.run_id}",
    ]


def test_every_run_flag_is_a_keyword_argument_of_audit():
    import typer.main

    from privbench.cli import build_app
    from privbench.plugins import get_registry

    command = typer.main.get_command(build_app(get_registry()))
    run = command.commands["run"]  # type: ignore[attr-defined]
    renamed = {"attack": "attacks", "scorer": "scorers", "quiet": None}
    renamed |= {f"{kind}_opt": f"{kind}_options" for kind in
                ("attack", "defense", "model", "dataset", "scorer")}  # fmt: skip
    parameters = inspect.signature(privbench.audit).parameters
    for param in run.params:
        name = renamed.get(param.name, param.name)
        if name is not None:
            assert name in parameters, f"privbench run --{param.name} has no audit({name}=...)"


def test_run_help_lists_the_installed_plugins(capsys):
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0
    for name in ("lira", "dp-sgd", "small-cnn", "digits", "curvature"):
        assert name in out


def test_a_run_logged_to_a_file_writes_progress_lines_while_it_works(tmp_path):
    """``privbench run > log.txt``: progress lines reach the file before the run ends."""
    log = tmp_path / "log.txt"
    environment = {**os.environ, "PRIVBENCH_WORKSPACE": str(tmp_path / "ws")}
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "privbench", "run", "--population", "400", "--epochs", "60",
             "--shadows", "3", "--attack", "loss"],
            stdout=handle, stderr=subprocess.PIPE, env=environment, text=True,
        )  # fmt: skip
        seen_while_running = ""
        while process.poll() is None:
            text = log.read_text()
            if "ready" in text and "results:" not in text:
                seen_while_running = text
            time.sleep(0.05)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert "trained and stored" in seen_while_running, log.read_text()
    final = log.read_text()
    assert "attack loss done: AUC" in final and "results:" in final
    assert "\x1b[" not in final  # plain lines, no terminal escapes
    record = json.loads(Path(final.split("results: ")[1].split()[0]).read_text())
    assert record["attacks"][0]["name"] == "loss"


def test_scorer_values_come_back_per_target_and_sample(tmp_path):
    result = privbench.audit(
        attacks=["loss"], scorers=["logit-confidence"], workspace=tmp_path, targets=2, **SMALL
    )
    values = result.scorer_values("logit-confidence")
    assert len(values) == 2 * 200 and set(values.target.tolist()) == {0, 1}
    assert (values.member == result.attacks[0].scores.member).all()
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(values.member, values.score)
    assert abs(auc - result.scorers["logit-confidence"].membership_auc) < 1e-12
    with pytest.raises(KeyError, match="no scorer 'hcr'"):
        result.scorer_values("hcr")


def test_a_run_recorded_before_the_redesign_loads_as_a_result(tmp_path):
    import shutil

    old = tmp_path / "20261201-070244-7465b8"
    shutil.copytree(Path(__file__).parent / "data" / "run-before-redesign", old)
    result = privbench.load_run(old)
    record = json.loads((old / "results.json").read_text())
    assert [a.name for a in result.attacks] == ["loss", "lira", "rmia"]
    for attack, stored in zip(result.attacks, record["attacks"], strict=True):
        metrics = attack.metrics.as_dict()
        assert {k: metrics[k] for k in stored["metrics"]} == stored["metrics"]
        assert attack.scores is None and np.isnan(metrics["epsilon_gdp"]), "not recorded then"
        assert np.isnan(metrics["epsilon_bayes"])
    assert result.memorization is not None and result.memorization.models == 4
    assert result.utility.per_target == ()  # not recorded then
    assert "loss" in str(result) and result.to_pandas().shape[0] == 3
