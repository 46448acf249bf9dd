"""The command line end to end, and its one-line errors."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import run_cli

from privbench.cli import main

pytestmark = pytest.mark.usefixtures("fresh_registry")


def test_run_loss_attack_on_an_overfit_digits_model(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    code, out, err = run_cli(
        capsys,
        "run",
        "--attack",
        "loss",
        "--attack",
        "confidence",
        "--scorer",
        "loss",
        "--shadows",
        "1",
        "--population",
        "300",
        "--epochs",
        "100",
        "--workspace",
        ws,
        "--quiet",
    )
    assert code == 0, err
    assert "loss" in out and "confidence" in out and "AUC" in out
    run_dir = next((tmp_path / "ws" / "runs").iterdir())
    record = json.loads((run_dir / "results.json").read_text())
    metrics = {a["name"]: a["metrics"] for a in record["attacks"]}
    assert metrics["loss"]["auc"] > 0.57, metrics
    assert record["utility"]["train_accuracy"] > record["utility"]["test_accuracy"]
    # 2 models, each in turn the target: 2 x population evaluation points.
    assert (
        metrics["loss"]["n_members"] + metrics["loss"]["n_nonmembers"]
        == 2 * record["spec"]["population"]
    )

    # The scorer's report: members of an overfit model have lower loss; every value in a CSV.
    loss = record["scorers"]["loss"]
    assert loss["members"]["median"] < loss["non_members"]["median"]
    assert loss["membership_auc"] < 0.45
    assert "scorers on the target models" in out
    rows = (run_dir / "scores-loss.csv").read_text().splitlines()
    assert rows[0] == "index,label,target,member,value" and len(rows) == 1 + 2 * 300

    code, out, _ = run_cli(capsys, "runs", "--workspace", ws)
    assert code == 0 and record["run_id"] in out
    code, out, _ = run_cli(capsys, "show", record["run_id"][:18], "--workspace", ws)
    assert code == 0 and "confidence" in out and f"{metrics['loss']['auc']:.4f}" in out


def test_plugins_command_lists_failed_plugins(capsys, monkeypatch):
    monkeypatch.setenv("PRIVBENCH_PLUGINS", "privbench_no_such_plugin")
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    assert "privbench_no_such_plugin" in out and "failed" in out
    assert "loss-attacks" in out and "small-cnn" in out


def test_strict_turns_a_failed_plugin_into_an_error(capsys, monkeypatch):
    monkeypatch.setenv("PRIVBENCH_PLUGINS", "privbench_no_such_plugin")
    code, _, err = run_cli(capsys, "--strict", "plugins")
    assert code == 2 and "privbench_no_such_plugin" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--attack", "los"], "did you mean 'loss'"),
        (["run", "--dataset", "cifar10", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
        (["run", "--attack", "confidence", "--attack-opt", "temperature=hot"], "expected a number"),
        (
            ["run", "--attack-opt", "temprature=2", "--attack", "confidence"],
            "did you mean 'temperature'",
        ),
        (["run", "--epochs", "0"], "'epochs' must be >= 1"),
        (["run", "--loss", "hinge"], "'loss' must be in ('cross-entropy', 'mse')"),
        (["run", "--scorer", "curvatur"], "did you mean 'curvature'"),
        (["run", "--scorer-opt", "method=exact"], "--scorer-opt method: no scorer given"),
        (["run", "--scorer", "loss", "--scorer", "loss"], "scorer 'loss' is given twice"),
        (["run", "--model", "small-cnn", "--model-opt", "width"], "--model-opt expects key=value"),
        (["show", "nope"], "no results database"),
    ],
)
def test_bad_input_gets_one_line(capsys, tmp_path, args, message):
    code, out, err = run_cli(capsys, *args, "--workspace", str(tmp_path / "ws"))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    assert not (tmp_path / "ws").exists(), "bad input must leave nothing behind"


def test_a_plugin_adds_a_sub_command(capsys, tmp_path, monkeypatch):
    (tmp_path / "privbench_hello_plugin.py").write_text(
        "import typer\n"
        "from privbench import hookimpl\n\n"
        "@hookimpl\n"
        "def register_commands(app):\n"
        "    @app.command()\n"
        "    def hello(name: str = typer.Argument('world')):\n"
        "        '''Say hello.'''\n"
        "        print(f'hello {name}')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PRIVBENCH_PLUGINS", "privbench_hello_plugin")
    with pytest.raises(SystemExit) as exit_info:
        main(["hello", "auditor"])
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out.strip() == "hello auditor"


def test_presets_fill_in_what_was_not_given(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    code, out, err = run_cli(capsys, "run", "--preset", "quick", "--epochs", "2", "-w", ws, "-q")
    assert code == 0, err
    assert "4 models, 2 target(s)" in out
    code, out, err = run_cli(
        capsys, "run", "--preset", "quick", "--shadows", "1", "--epochs", "2", "-w", ws, "-q"
    )
    assert code == 0, err
    assert "2 models, 2 target(s)" in out
    code, _, err = run_cli(capsys, "run", "--preset", "quik", "-w", ws)
    assert code == 2 and "did you mean 'quick'" in err


def test_the_fashion_mnist_presets_set_model_recipe_and_dp_and_flags_win():
    from privbench.engine.settings import build_spec
    from privbench.plugins import get_registry

    registry = get_registry()
    plain, notes = build_spec(registry, preset="fashion-mnist")
    assert (plain.dataset.name, plain.model.name, plain.defense.name) == (
        "fashion-mnist",
        "conv-fc",
        "none",
    )
    assert (plain.recipe.epochs, plain.recipe.augment, plain.population) == (15, "flip", 10_000)
    assert any("preset fashion-mnist" in note for note in notes)
    dp, _ = build_spec(registry, preset="fashion-mnist-dp", epochs=2, dataset="digits")
    assert dp.model.name == "tanh-cnn" and dp.dataset.name == "digits"  # flags win
    assert dp.defense.name == "dp-sgd"
    assert dict(dp.defense.options) == {"epsilon": 3.0, "max_grad_norm": 0.1}
    assert (dp.recipe.epochs, dp.recipe.batch_size, dp.recipe.lr) == (2, 2048, 4.0)
    assert (dp.recipe.schedule, dp.recipe.weight_decay) == ("constant", 0.0)


def test_mirrored_queries_on_digits_are_refused_without_a_result(capsys, tmp_path):
    ws = tmp_path / "ws"
    args = [
        "run",
        "--preset",
        "quick",
        "--epochs",
        "1",
        "--attack-opt",
        "hflip=true",
        "-w",
        str(ws),
    ]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "mirrored queries change labels in dataset 'digits'" in err
    assert len(err.strip().splitlines()) == 1
    assert not (ws / "privbench.db").exists() and not (ws / "models").exists(), "before training"


def test_a_dp_defense_gets_its_theoretical_bound_printed(capsys, tmp_path, monkeypatch):
    (tmp_path / "privbench_fake_dp.py").write_text(
        "from typing import ClassVar\n"
        "import attrs\n"
        "from privbench import Defense, hookimpl\n\n"
        "@attrs.frozen\n"
        "class FakeDP(Defense):\n"
        "    name: ClassVar[str] = 'fake-dp'\n"
        "    description: ClassVar[str] = 'reports a guarantee it does not give'\n"
        "    epsilon: float = 1.0\n\n"
        "    def fit(self, model, data, trainer):\n"
        "        return {**trainer.fit(model, data), 'epsilon': self.epsilon, 'delta': 1e-5}\n\n"
        "@hookimpl\n"
        "def register_defenses(register):\n"
        "    register(FakeDP)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PRIVBENCH_PLUGINS", "privbench_fake_dp")
    ws = str(tmp_path / "ws")
    args = ["run", "-d", "fake-dp", "--defense-opt", "epsilon=2", "--preset", "quick", "-w", ws]
    code, out, err = run_cli(capsys, *args, "-q")
    assert code == 0, err
    from privbench.analysis.theory import theoretical_maximum

    expected = theoretical_maximum(2.0, 1e-5)
    assert "(ε=2, δ=1e-05)-DP allows at most" in out
    assert f"AUC {expected.auc:.4f}" in out
    # The defense's own report, without the trainer's bookkeeping.
    assert "defense fake-dp (first target): delta 1e-05, epsilon 2\n" in out
    code, out, _ = run_cli(capsys, "show", "latest", "-w", ws)
    assert f"TPR@1%FPR {expected.tpr_at_1_fpr:.4f}" in out


RECONSTRUCTION_PLUGIN = """
from typing import ClassVar
import attrs
import torch
from privbench import Access, hookimpl
from privbench.plugins import Registry

@attrs.frozen
class Guess:
    '''Returns every image of the train split (an attacker with the candidate pool) or noise.'''
    name: ClassVar[str] = 'guess'
    description: ClassVar[str] = 'returns the whole train split, or noise'
    access: ClassVar[Access] = Access.PARAMETERS
    victim_setting: ClassVar[dict] = {'population': 60, 'shadows': 0, 'epochs': 2}
    noise: bool = False

    def reconstruct(self, context):
        assert context.target.model is not None and context.initial is not None
        assert context.input_shape == (1, 8, 8) and context.num_classes == 10
        if self.noise:
            g = torch.Generator().manual_seed(context.seed)
            return torch.rand(2 * context.train_size, *context.input_shape, generator=g)
        return Registry.from_environment().create('dataset', 'digits').load(None).train.x

@hookimpl
def register_attacks(register):
    register(Guess)
"""


@pytest.mark.parametrize("noise", [False, True])
def test_a_reconstruction_attack_is_matched_to_the_targets_training_images(
    capsys, tmp_path, monkeypatch, noise
):
    (tmp_path / "privbench_guess.py").write_text(RECONSTRUCTION_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PRIVBENCH_PLUGINS", "privbench_guess")
    ws = tmp_path / "ws"
    args = ["run", "-a", "guess", "-a", "loss", "--attack-opt", f"guess.noise={str(noise).lower()}"]
    # The attack's victim setting fills in population, shadows and epochs; a flag overrides.
    args += ["--population", "40"] if noise else []
    code, out, err = run_cli(capsys, *args, "-w", str(ws), "-q")
    assert code == 0, err
    assert "attack guess's victim setting: " in out
    assert ("--population 60" in out) is not noise and "--epochs 2" in out
    (run_dir,) = (ws / "runs").iterdir()
    record = json.loads((run_dir / "results.json").read_text())
    (summary,) = record["reconstructions"]
    assert summary["name"] == "guess" and summary["access"] == "parameters"
    # A Bernoulli half would vary: halves are exact.
    assert summary["train_size"] == (20 if noise else 30)
    assert (run_dir / summary["grid"]).stat().st_size > 0
    assert "reconstruction attack guess on target 0" in out
    assert [a["name"] for a in record["attacks"]] == ["loss"]
    metrics = summary["metrics"]
    recovered = metrics["fraction_identified"]
    assert 0 <= metrics["chance_fraction_recovered"] <= 1
    if noise:
        assert recovered < 0.1, metrics
    else:
        assert recovered == 1.0, metrics  # every member is among the candidates
    with sqlite3.connect(ws / "privbench.db") as db:
        (row,) = db.execute("SELECT attack, train_size, fraction_identified FROM reconstructions")
    assert row == ("guess", summary["train_size"], recovered)
    code, out, _ = run_cli(capsys, "runs", "-w", str(ws))
    assert code == 0 and "loss, guess" in out
    code, out, _ = run_cli(capsys, "show", "latest", "-w", str(ws))
    assert code == 0 and "reconstruction attack guess on target 0" in out


def test_plugins_options_name_shows_every_option_with_its_meaning_in_full(capsys):
    code, out, _ = run_cli(capsys, "plugins", "--options", "rmia")
    assert code == 0
    assert "attack rmia" in out
    for option in ("gamma", "num_z", "offline_a", "temperature", "augment"):
        assert option in out
    assert "…" not in out  # values and meanings in full, not cut
    from privbench.plugins import get_registry
    from privbench.plugins.options import option_summary

    meaning = option_summary(get_registry().get("attack", "rmia").cls)["gamma"]
    assert " ".join(meaning.split()[:4]) in " ".join(out.split())
    code, out, err = run_cli(capsys, "plugins", "--options", "rmai")
    assert code == 2 and "did you mean 'rmia'" in err
