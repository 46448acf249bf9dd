"""The HTML leaderboard (``privbench leaderboard --format html``): a self-contained page whose
table sorts and whose plots render, checked in a real headless browser (Debian's chromium and
chromedriver, driven by selenium), plus the page built from hand-made records (old ones without a
stored ROC, names that need escaping, a failed cell) without one."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from privbench.analysis.metrics import roc, roc_points
from privbench.cli import main
from privbench.plugins import set_registry
from privbench.results import leaderboard as board
from privbench.results.db import METRIC_COLUMNS, ResultsDB

SUITE = """
[suite]
name = "html-tiny"
seeds = [0]
shadows = 3
population = 200

[recipe]
epochs = 5

[[datasets]]
name = "digits"

[[models]]
name = "mlp"

[[defenses]]
name = "none"

[[defenses]]
name = "feature-noise"
options = { scale = 1.0 }

[[attacks]]
name = "loss"

[[attacks]]
name = "lira"
options = { variant = "offline" }
"""
DEFENSES = 2

pytestmark = pytest.mark.usefixtures("fresh_registry")


def privbench(*args: str) -> None:
    """``privbench ARGS`` in-process, which must succeed (module fixtures cannot use capsys)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert (exit_info.value.code or 0) == 0, args


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real suite's leaderboard page: 2 defenses x 2 attacks on digits, one seed (~20 s)."""
    root = tmp_path_factory.mktemp("leaderboard")
    suite, ws, html = root / "tiny.toml", str(root / "ws"), root / "board.html"
    suite.write_text(SUITE)
    set_registry(None)
    try:
        privbench("bench", str(suite), "-w", ws, "-q")
        privbench("leaderboard", str(suite), "-w", ws, "-f", "html", "-o", str(html))
    finally:
        set_registry(None)
    return html


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium; never selenium-manager, which would try to download a browser."""
    driver_path = shutil.which("chromedriver")
    found = {
        "chromium": Path("/usr/bin/chromium").is_file(),
        "chromedriver": driver_path is not None,
        "selenium": importlib.util.find_spec("selenium") is not None,
    }
    if missing := [name for name, ok in found.items() if not ok]:
        reason = (
            f"{', '.join(missing)} not installed: the HTML leaderboard test needs Debian's "
            "chromium and chromium-driver (apt-get install chromium chromium-driver) and the "
            "Python package selenium (pip install selenium); 'make test' installs them"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,2000")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def column(browser: Any, name: str) -> list[str]:
    """A table column as the page shows it now: ``data-value`` of numbers, text otherwise."""
    return browser.execute_script(
        """
        const heads = [...document.querySelectorAll("#leaderboard thead th")];
        const i = heads.findIndex((th) => th.dataset.column === arguments[0]);
        return [...document.querySelectorAll("#leaderboard tbody tr")].map(
            (row) => row.cells[i].dataset.value ?? row.cells[i].textContent);
        """,
        name,
    )


def header(browser: Any, name: str) -> Any:
    return browser.find_element("css selector", f'#leaderboard th[data-column="{name}"]')


def sorted_by(browser: Any) -> dict[str, str]:
    """``data-column -> aria-sort`` of the headers that have one."""
    heads = browser.find_elements("css selector", "#leaderboard th[aria-sort]")
    return {th.get_attribute("data-column"): th.get_attribute("aria-sort") for th in heads}


def coloured(png: bytes) -> tuple[tuple[int, int], int]:
    """An image's size and how many of its pixels are clearly coloured (not white, grey, black):
    drawn curves and points, which a blank or broken plot lacks."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    return (pixels.shape[1], pixels.shape[0]), int((np.ptp(pixels, axis=2) > 60).sum())


def test_the_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    external = r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//"""
    assert not re.findall(external, text, flags=re.IGNORECASE)
    assert "<link" not in text and "<script src" not in text and "@import" not in text
    assert "privbench leaderboard: html-tiny" in text and "UTC" in text
    assert "<b>4</b> configurations" in text and "ranked by <b>TPR@0.1%FPR</b>" in text
    assert len(text) < 400_000  # text as text: inline SVG stays small


def test_headers_sort_the_table(page: Path, browser: Any) -> None:
    browser.get(page.as_uri())
    assert sorted_by(browser) == {"tpr_at_0_1_fpr": "descending"}
    ranked = [float(v) for v in column(browser, "tpr_at_0_1_fpr")]
    assert ranked == sorted(ranked, reverse=True) and len(ranked) == 4
    aucs = sorted(float(v) for v in column(browser, "auc"))

    header(browser, "auc").click()
    assert sorted_by(browser) == {"auc": "descending"}
    assert [float(v) for v in column(browser, "auc")] == aucs[::-1]
    header(browser, "auc").click()
    assert sorted_by(browser) == {"auc": "ascending"}
    assert [float(v) for v in column(browser, "auc")] == aucs

    header(browser, "attack").click()
    assert sorted_by(browser) == {"attack": "ascending"}
    attacks = column(browser, "attack")
    assert attacks == sorted(attacks) and set(attacks) == {"loss", "lira(variant=offline)"}
    header(browser, "attack").click()
    assert column(browser, "attack") == sorted(attacks, reverse=True)


def test_the_plots_render(page: Path, browser: Any, tmp_path: Path) -> None:
    browser.get(page.as_uri())
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True})
    (tmp_path / "leaderboard.png").write_bytes(base64.b64decode(shot["data"]))

    rocs = browser.find_elements("css selector", "figure.roc svg")
    assert len(rocs) == DEFENSES
    defenses = {
        f.get_attribute("data-defense") for f in browser.find_elements("css selector", "figure.roc")
    }
    assert defenses == set(column(browser, "defense"))
    for svg in rocs:
        (width, height), drawn = coloured(svg.screenshot_as_png)
        assert width >= 250 and height >= 250, (width, height)
        assert drawn > 800, drawn  # two attack curves (~2000 pixels), not just their keys
        assert "(AUC 0." in svg.text
    scatter = browser.find_element("css selector", "figure.scatter svg")
    (width, height), drawn = coloured(scatter.screenshot_as_png)
    assert width >= 400 and height >= 250, (width, height)
    assert drawn > 150, drawn  # a large point per defense (~290 pixels for all)
    caption = browser.find_element("css selector", "figure.scatter figcaption").text
    assert "clean test accuracy" in caption and "Lower right is better" in caption


# ---- hand-made records: no training, no browser needed (except for the last test) ----------


def record(run_id: str, defense: str, seed: int, attacks: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's record with only what the database and the leaderboard read."""
    return {
        "run_id": run_id,
        "created_at": f"2024-01-01T00:00:0{seed}",
        "spec": {
            "dataset": {"name": "digits"},
            "model": {"name": "mlp", "options": {}},
            "defense": {"name": defense, "options": {}},
            "seed": seed,
        },
        "utility": {"train_accuracy": 1.0, "test_accuracy": 0.9 - 0.1 * seed},
        "seconds": 1.0,
        "attacks": attacks,
    }


def attack(
    name: str, seed: int, *, stored_roc: bool, epsilon: float | None = 0.5
) -> dict[str, Any]:
    """An attack result; ``stored_roc=False`` is a record from before ROCs were stored."""
    rng = np.random.default_rng(seed)
    member = np.arange(400) < 200
    fpr, tpr, _ = roc(rng.normal(size=400) + 0.5 * member, member)
    metrics = dict.fromkeys(METRIC_COLUMNS, 0.25) | {
        "auc": 0.6 + seed / 100,
        "epsilon_lower": epsilon,
    }
    result = {"name": name, "access": "logits", "options": {}, "metrics": metrics, "seconds": 0.1}
    return result | ({"roc": roc_points(fpr, tpr)} if stored_roc else {})


def handmade(tmp_path: Path) -> tuple[list[dict[str, Any]], str]:
    """Rows and the HTML page of a suite whose ``lira`` runs are old (no ROC), whose second
    defense's name needs escaping and has no ROC at all, and with one failed cell."""
    runs = [
        record(
            "r0",
            "none",
            0,
            [attack("loss", 0, stored_roc=True), attack("lira", 0, stored_roc=False)],
        ),
        record(
            "r1",
            "none",
            1,
            [attack("loss", 1, stored_roc=True), attack("lira", 1, stored_roc=False)],
        ),
        record("r2", "<b>odd</b>", 0, [attack("loss", 2, stored_roc=False, epsilon=None)]),
    ]
    with ResultsDB(tmp_path / "privbench.db") as db:
        for run in runs:
            db.insert_run(run, tmp_path)
            db.record_suite_cell("unit", run["run_id"], run["run_id"], "done", run["run_id"], None)
        db.record_suite_cell(
            "unit", "bad", "digits / <i>cell</i>", "failed", None, "<script>x</script>"
        )
    with ResultsDB(tmp_path / "privbench.db") as db:
        rows, failed = board.collect(db, "unit"), db.failed_cells("unit")
    return rows, board.render(rows, "html", "auc", suite="unit & co", failed=failed)


def test_old_records_without_a_roc_have_no_curve(tmp_path: Path) -> None:
    rows, text = handmade(tmp_path)
    by_key = {(row["defense"], row["attack"]): row for row in rows}
    assert by_key[("none", "lira")]["roc"] is None and by_key[("<b>odd</b>", "loss")]["roc"] is None
    # Two seeds' stored step curves, averaged on the union of their grids.
    curves = [attack("loss", s, stored_roc=True)["roc"] for s in (0, 1)]
    mean = by_key[("none", "loss")]["roc"]

    def step(curve: dict[str, list[float]], at: float) -> float:
        return curve["tpr"][np.searchsorted(curve["fpr"], at, side="right") - 1]

    for at in (0.0, 0.005, 0.01, 0.1, 0.5, 1.0):
        assert step(mean, at) == pytest.approx(np.mean([step(c, at) for c in curves]))
    # One figure (defense none) with only the loss curve; the ROC-less configurations are named.
    figures = re.findall(r'<figure class="roc".*?</figure>', text, flags=re.DOTALL)
    assert len(figures) == 1 and 'data-defense="none"' in figures[0]
    assert "loss (AUC 0.605)" in figures[0] and "lira" not in figures[0]
    note = re.search(r"No stored ROC.*?</p>", text).group(0)
    assert "digits / mlp / none / lira" in note and "&lt;b&gt;odd&lt;/b&gt; / loss" in note
    # Everything from the database is escaped; the failed cell is listed.
    assert "<b>odd</b>" not in text and "<i>cell</i>" not in text and "<script>x" not in text
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "Failed cells (1)" in text
    assert "privbench leaderboard: unit &amp; co" in text
    # The other formats do not carry the curves.
    assert "roc" not in json.loads(board.render(rows, "json", "auc"))["rows"][0]


def test_missing_values_sort_last_both_ways(tmp_path: Path, browser: Any) -> None:
    _, text = handmade(tmp_path)
    (tmp_path / "board.html").write_text(text)
    browser.get((tmp_path / "board.html").as_uri())
    header(browser, "epsilon_lower").click()
    assert column(browser, "epsilon_lower") == ["0.5", "0.5", ""]
    header(browser, "epsilon_lower").click()
    assert sorted_by(browser) == {"epsilon_lower": "ascending"}
    assert column(browser, "epsilon_lower") == ["0.5", "0.5", ""]
