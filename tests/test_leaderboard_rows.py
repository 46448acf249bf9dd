"""Leaderboard rows (:mod:`privbench.results.leaderboard.rows`): one row per configuration, so
runs with other settings under one label are other rows that say what differs, seeds of one
configuration one row; and a TPR measured on too few non-members to allow a false positive is
marked as the TPR at zero false positives in every format, with the count it rests on.

Real tiny audits where the record matters (population 64 and 100, two models each, one epoch:
a few seconds), hand-made records inserted the way a run inserts its own elsewhere."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import privbench
from privbench.plugins import set_registry
from privbench.results import leaderboard as board
from privbench.results.db import METRIC_COLUMNS, ResultsDB

pytestmark = pytest.mark.usefixtures("fresh_registry")

ZERO_FP_01 = "TPR at 0.1% FPR with N < 1,000 non-members is TPR at zero false positives"
ZERO_FP_1 = "TPR at 1% FPR with N < 100 non-members is TPR at zero false positives"
OLD_HEADER = (  # the committed leaderboards' header, with the GDP ε (issue 19) and Bayesian ε
    "| rank | dataset | model | defense | attack | seeds | tpr_at_0_1_fpr | tpr_at_1_fpr | auc "
    "| balanced_accuracy | epsilon_lower | epsilon_gdp | epsilon_bayes | test_accuracy | seconds |"
)


@pytest.fixture(scope="module")
def audits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Any]]]:
    """One workspace: population 64 at seeds 0 and 1, population 100 at seed 0 (2 targets:
    64 and 100 non-members), the loss attack on digits' MLP."""
    workspace = tmp_path_factory.mktemp("rows")
    set_registry(None)
    try:
        results = [
            privbench.audit(
                attacks="loss",
                model="mlp",
                population=population,
                shadows=1,
                epochs=1,
                seed=seed,
                workspace=workspace,
                device="cpu",
            )
            for population, seed in ((64, 0), (64, 1), (100, 0))
        ]
        yield workspace, results
    finally:
        set_registry(None)


def collected(workspace: Path) -> list[dict[str, Any]]:
    with ResultsDB(workspace / "privbench.db") as db:
        return board.collect(db)


def test_runs_with_other_settings_are_other_rows(audits: tuple[Path, list[Any]]) -> None:
    workspace, _ = audits
    rows = collected(workspace)
    assert len(rows) == 2  # the old rows merged all three runs under "digits / mlp / none / loss"
    assert {row["config"] for row in rows} == {"population=64", "population=100"}
    assert {(row["attack"], row["model"], row["defense"]) for row in rows} == {
        ("loss", "mlp", "none")
    }
    lines = board.render(rows, "md", "auc").splitlines()
    assert "| attack | config | seeds |" in lines[0]
    lines = lines[2:4]
    # Each row reads differently without its numbers: the label tells them apart.
    labels = [line.split(" | ")[1:6] for line in lines]
    assert len({tuple(label) for label in labels}) == 2
    assert any("population=64" in line for line in lines)
    assert any("population=100" in line for line in lines)


def test_seeds_of_one_configuration_are_one_row(audits: tuple[Path, list[Any]]) -> None:
    workspace, results = audits
    rows = {row["config"]: row for row in collected(workspace)}
    small, large = rows["population=64"], rows["population=100"]
    assert (small["seeds"], small["runs"], large["seeds"], large["runs"]) == (2, 2, 1, 1)
    aucs = [r.attack("loss").metrics.auc for r in results]
    assert small["auc"] == pytest.approx((aucs[0] + aucs[1]) / 2)
    assert large["auc"] == pytest.approx(aucs[2])


def test_a_tpr_on_too_few_nonmembers_is_flagged(audits: tuple[Path, list[Any]]) -> None:
    workspace, results = audits
    rows = collected(workspace)
    assert [r.attack("loss").metrics.n_nonmembers for r in results] == [64, 64, 100]
    ranked = board.rank(rows, "tpr_at_0_1_fpr")
    by_config = {row["config"]: row for row in ranked}
    assert by_config["population=64"]["tpr_at_zero_fp"] == [
        "tpr_at_0_01_fpr",
        "tpr_at_0_1_fpr",
        "tpr_at_1_fpr",
    ]
    # 100 non-members allow one false positive at 1% FPR: that TPR stands.
    assert by_config["population=100"]["tpr_at_zero_fp"] == ["tpr_at_0_01_fpr", "tpr_at_0_1_fpr"]

    text = board.render(rows, "md", "tpr_at_0_1_fpr")
    lines = text.splitlines()
    assert lines[0].startswith("| rank |")
    assert lines[5].startswith("Ranked by TPR at 0.1% FPR, which 2 of 2 rows (†)")
    table = [line.split(" | ") for line in lines if line.startswith("| ") and "rank" not in line]
    at_01, at_1 = 7, 8  # rank, dataset, model, defense, attack, config, seeds, then the metrics
    for cells, row in zip(table, ranked, strict=True):
        assert cells[at_01] == f"{row['tpr_at_0_1_fpr']:.4f}†"
        small = row["config"] == "population=64"
        assert cells[at_1] == f"{row['tpr_at_1_fpr']:.4f}" + ("†" if small else "")
    assert f"† {ZERO_FP_01} (ranks 1, 2: N = 64 to 100)." in text
    rank_small = 1 + [row["config"] for row in ranked].index("population=64")
    assert f"† {ZERO_FP_1} (rank {rank_small}: N = 64)." in text

    page = board.render(rows, "html", "tpr_at_0_1_fpr")
    cells = re.findall(r'<td class="num ranked zero-fp"[^>]*title="([^"]*)">([^<]*)</td>', page)
    assert len(cells) == 2 and all(value.endswith("†") for _, value in cells)
    assert "TPR at 0.1% FPR on 64 non-members (fewer than 1,000)" in cells[0][0] + cells[1][0]
    assert 'id="ranking-note">Ranked by TPR at 0.1% FPR, which 2 of 2 rows' in page
    caption = re.search(r"<caption>.*?</caption>", page).group(0)
    assert ZERO_FP_01.replace("<", "&lt;") in caption and ZERO_FP_1.replace("<", "&lt;") in caption
    # Each configuration has its own ROC figure, named by its config.
    assert page.count('<figure class="roc"') == 2
    assert "defense <b>none</b> · population=64:" in page


def test_csv_and_json_carry_the_count(audits: tuple[Path, list[Any]]) -> None:
    workspace, _ = audits
    rows = collected(workspace)
    table = list(csv.DictReader(io.StringIO(board.render(rows, "csv", "auc"))))
    assert {(r["config"], r["n_nonmembers"], r["tpr_at_zero_fp"]) for r in table} == {
        ("population=64", "64", "tpr_at_0_01_fpr;tpr_at_0_1_fpr;tpr_at_1_fpr"),
        ("population=100", "100", "tpr_at_0_01_fpr;tpr_at_0_1_fpr"),
    }
    # The metrics stay the last columns, the ranked one first.
    header = next(csv.reader(io.StringIO(board.render(rows, "csv", "auc"))))
    assert header[-10:] == [
        "auc",
        "tpr_at_0_1_fpr",
        "tpr_at_1_fpr",
        "balanced_accuracy",
        "epsilon_lower",
        "epsilon_gdp",
        "epsilon_bayes",
        "epsilon_one_run",  # empty but for one-run audits: CSV's columns never depend on rows
        "test_accuracy",
        "seconds",
    ]
    data = json.loads(board.render(rows, "json", "auc"))["rows"]
    assert {(r["config"], r["n_nonmembers"], len(r["tpr_at_zero_fp"])) for r in data} == {
        ("population=64", 64, 3),
        ("population=100", 100, 2),
    }


# ---- hand-made records -------------------------------------------------------------------


def record(
    run_id: str,
    seed: int,
    *,
    auc: float = 0.6,
    nonmembers: float | None = 1000.0,
    defense: str = "none",
    recipe: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A run's record as a suite cell writes it, with one ``loss`` result."""
    metrics = dict.fromkeys(METRIC_COLUMNS, 0.01) | {"auc": auc, "n_nonmembers": nonmembers}
    metrics["epsilon_one_run"] = None  # LiRA's game: no one-run bound
    return {
        "run_id": run_id,
        "created_at": f"2024-01-01T00:00:{len(run_id):02d}",
        "spec": {
            "dataset": {"name": "digits", "options": {}, "version": "0.1.0"},
            "model": {"name": "mlp", "options": options or {}, "version": "0.1.0"},
            "defense": {"name": defense, "options": {}, "version": "0.1.0"},
            "recipe": {"epochs": 30, "lr": 0.05} if recipe is None else recipe,
            "shadows": 3,
            "targets": 4,
            "population": 500,
            "seed": seed,
            "paired": False,
            "device": "cpu",
        }
        | spec,
        "utility": {"train_accuracy": 1.0, "test_accuracy": 0.9},
        "seconds": 1.0,
        "attacks": [
            {"name": "loss", "access": "logits", "options": {}, "metrics": metrics, "seconds": 0.1}
        ],
    }


def rows_of(tmp_path: Path, *records: dict[str, Any]) -> list[dict[str, Any]]:
    with ResultsDB(tmp_path / "privbench.db") as db:
        for run in records:
            db.insert_run(run, tmp_path)
            db.record_suite_cell("unit", run["run_id"], run["run_id"], "done", run["run_id"], None)
    with ResultsDB(tmp_path / "privbench.db") as db:
        return board.collect(db, "unit")


def test_a_suite_whose_cells_differ_in_seeds_and_defenses_reads_as_before(tmp_path: Path) -> None:
    # What the committed leaderboards hold (docs/leaderboards/): no config column, no notes.
    rows = rows_of(
        tmp_path,
        record("a", 0),
        record("b", 1, auc=0.7, device="cuda"),  # the device decides nothing
        record("c", 0, defense="feature-noise"),
    )
    assert sorted((r["defense"], r["seeds"], r["config"]) for r in rows) == [
        ("feature-noise", 1, ""),
        ("none", 2, ""),
    ]
    text = board.render(rows, "md", "tpr_at_0_1_fpr")
    assert text.splitlines()[0] == OLD_HEADER and "†" not in text  # 4 x 250 non-members
    page = board.render(rows, "html", "tpr_at_0_1_fpr")
    assert 'data-column="config"' not in page and "zero-fp" not in page.split("</style>")[1]


def test_only_the_settings_that_differ_are_named(tmp_path: Path) -> None:
    rows = rows_of(
        tmp_path,
        record("a", 0, recipe={"epochs": 30, "lr": 0.05}),
        record("b", 0, recipe={"epochs": 5, "lr": 0.05}, population=200),
        record("c", 1, recipe={"epochs": 5, "lr": 0.05}, population=200),
        record("d", 0, recipe={"epochs": 30, "lr": 0.05}, targets=2, defense="dp-sgd"),
    )
    configs = sorted((r["defense"], r["config"], r["seeds"]) for r in rows)
    # Per defense: dp-sgd has one configuration, so it is not told apart from anything.
    assert configs == [
        ("dp-sgd", "", 1),
        ("none", "population=200, epochs=5", 2),
        ("none", "population=500, epochs=30", 1),
    ]


def test_options_and_recipe_fields_an_old_record_lacks_read_as_their_defaults(
    tmp_path: Path,
) -> None:
    new = record("new", 1, recipe={"epochs": 30, "lr": 0.05, "loss": "cross-entropy"})
    new["spec"]["model"]["options"] = {"width": 256, "depth": 2}  # mlp's defaults, spelled out
    old = record("old", 0)  # recorded before loss was a recipe field, options left out
    rows = rows_of(tmp_path, old, new)
    assert [(r["model"], r["config"], r["seeds"]) for r in rows] == [("mlp", "", 2)]


def test_a_rerun_seed_weighs_once(tmp_path: Path) -> None:
    rows = rows_of(
        tmp_path, record("a", 0, auc=0.6), record("b", 0, auc=0.6), record("c", 1, auc=0.9)
    )
    assert len(rows) == 1
    assert (rows[0]["seeds"], rows[0]["runs"]) == (2, 3)
    assert rows[0]["auc"] == pytest.approx(0.75)  # the mean over seeds, not over runs (0.7)


def test_the_fewest_nonmembers_of_the_merged_runs_decide(tmp_path: Path) -> None:
    # Paired masks leave a seed-dependent count; a count missing from an old database is
    # each target's half of the population.
    rows = rows_of(
        tmp_path,
        record("a", 0, nonmembers=1010.0, paired=True),
        record("b", 1, nonmembers=990.0, paired=True),
        record("c", 0, nonmembers=None, population=400),
    )
    by_config = {r["config"]: r for r in rows}
    assert by_config["population=500, paired=True"]["n_nonmembers"] == 990
    assert by_config["population=500, paired=True"]["tpr_at_zero_fp"] == [
        "tpr_at_0_01_fpr",
        "tpr_at_0_1_fpr",
    ]
    assert by_config["population=400, paired=False"]["n_nonmembers"] == 4 * 200
    text = board.render(rows, "md", "auc")
    assert "Ranked by" not in text  # the ranked metric (AUC) is not flagged
    assert f"† {ZERO_FP_01} (ranks 1, 2: N = 800 to 990)." in text
