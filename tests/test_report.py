"""``privbench report``: one run as one self-contained HTML page. A real audit through the
command line (two attacks, sliced by class) and its page: every section, the slices' counts, the
figures, no request anywhere, and the page in a real headless browser (chromium, as the
leaderboard's test drives it). Then the runs that lack parts: outputs alone (no images), a
reconstruction-only run, a target the user brought whose folder is gone; and record strings that
need escaping."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html import escape
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import pytest
import test_leaderboard_html as leaderboard_page
import torch
from conftest import run_cli
from PIL import Image
from privbench_plugins.models.small import MLP
from safetensors.torch import save_file

import privbench
from privbench.analysis.metrics import tpr_at_fpr
from privbench.plugins import set_registry
from privbench.results.parts import MembershipScores
from privbench.results.report import SECTIONS, pool_text, render_report
from privbench.results.report_figures import MAX_CURVE_POINTS, curve
from privbench.results.tables import reconstruction_metrics

browser = leaderboard_page.browser  # headless chromium, skipped with the reason without it
coloured = leaderboard_page.coloured
cli = leaderboard_page.privbench  # in-process, for module fixtures (which cannot use capsys)

pytestmark = pytest.mark.usefixtures("fresh_registry")

SCRIPT = "<script>alert(1)</script>"
ROW = re.compile(
    r'<tr class="(attack|slice)" data-attack="([^"]*)"(?: data-slice="([^"]*)")? '
    r'data-members="(\d+)" data-non-members="(\d+)">'
)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[privbench.AuditResult, str]:
    """A real audit, loss and LiRA on 4 small CNNs sliced by class (~5 s), and its page as
    ``privbench report latest -o`` writes it."""
    ws = tmp_path_factory.mktemp("report")
    set_registry(None)
    try:
        cli(
            "run",
            "--population",
            "200",
            "--shadows",
            "3",
            "--epochs",
            "5",
            "-a",
            "loss",
            "-a",
            "lira",
            "--slice",
            "class",
            "-w",
            str(ws),
            "-q",
        )
        cli("report", "latest", "-w", str(ws), "-o", str(ws / "r.html"))
    finally:
        set_registry(None)
    return privbench.load_run("latest", workspace=ws), (ws / "r.html").read_text()


def section(text: str, name: str) -> str:
    found = re.search(rf'<section id="{name}"[^>]*>(.*?)</section>', text, flags=re.DOTALL)
    assert found, f"the page has no section '{name}'"
    return found.group(1)


def images(html: str) -> list[bytes]:
    """The PNGs embedded in *html*, decoded."""
    return [
        base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    ]


def test_every_section_is_there_warnings_first(audited: tuple[Any, str]) -> None:
    result, text = audited
    order = [text.index(f'<section id="{name}"') for name in ("warnings", *SECTIONS)]
    assert order == sorted(order)
    warnings = section(text, "warnings")
    assert result.warnings and all(escape(w) in warnings for w in result.warnings)
    assert f"Warnings ({len(result.warnings)})" in warnings
    audited_part = section(text, "audited")
    for shown in (
        "<b>digits</b>",
        "<b>small-cnn</b>",
        "(batchnorm=False, depth=3, width=32)",
        "<b>none</b>",
        "<b>loss</b> &middot; access <b>logits</b>",
        "<b>lira</b> &middot; access <b>logits</b>",
        "4 models, 4 target(s) x 200 samples",
        "epochs=5",
        result.run_id,
        result.created_at,
        "<dt>seed</dt><dd>0</dd>",
        f"<dd>{privbench.__version__} ",
    ):
        assert shown in audited_part, shown
    utility = section(text, "utility")
    assert len(re.findall(r'<tr class="target">', utility)) == len(result.utility.per_target) == 4
    assert f"{result.utility.test_accuracy:.4f}" in utility
    assert "No reconstruction attack in this run." in section(text, "reconstructions")


def test_the_metrics_table_has_every_attack_and_its_slices(audited: tuple[Any, str]) -> None:
    result, text = audited
    metrics = section(text, "metrics")
    rows = ROW.findall(metrics)
    assert [name for kind, name, *_ in rows if kind == "attack"] == ["loss", "lira"]
    for attack in result.attacks:
        m = attack.metrics
        row = re.search(rf'<tr class="attack" data-attack="{attack.name}".*?</tr>', metrics)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
        spread = attack.per_target
        assert cells[:4] == [
            attack.name,
            "logits",
            f"{m.auc:.4f}",
            f"{spread.mean['auc']:.3f} ± {spread.std['auc']:.3f}",
        ]
        assert cells[4:9] == [
            f"{v:.4f}"
            for v in (
                m.tpr_at_0_01_fpr,
                m.tpr_at_0_1_fpr,
                m.tpr_at_1_fpr,
                m.balanced_accuracy,
                m.advantage,
            )
        ]
        assert cells[9:11] == [f"{attack.epsilon.lower:.4f}", f"{attack.epsilon.estimate:.4f}"]
        slices = [r for r in rows if r[0] == "slice" and r[1] == attack.name]
        assert len(slices) == len(attack.slices) == 10 and {r[2] for r in slices} == {"class"}
        # The slices partition the attack's samples: their counts add up to the attack's.
        (_, _, _, members, non_members), *_ = (r for r in rows if r[:2] == ("attack", attack.name))
        assert int(members) == m.n_members == sum(int(r[3]) for r in slices) == 400
        assert int(non_members) == m.n_nonmembers == sum(int(r[4]) for r in slices)
    assert "ε ≥ (95%)" in metrics and "δ=1e-05" in metrics


def test_the_page_makes_no_request(audited: tuple[Any, str]) -> None:
    _, text = audited
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert csp and "default-src 'none'" in csp.group(1) and "img-src data:" in csp.group(1)
    assert "http://" not in text and "https://" not in text  # not even an SVG namespace
    assert "<script" not in text and "<link" not in text and "@import" not in text
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)
    assert len(text) < 1_000_000


def test_the_figures(audited: tuple[Any, str]) -> None:
    result, text = audited
    roc = section(text, "roc")
    assert roc.count("<svg") == 1 and "loss (AUC " in roc and "lira (AUC " in roc
    assert " 0.1% FPR" in roc and " 1% FPR" in roc  # the dotted lines' labels, as SVG text
    loss = result.attack("loss")
    assert f"at 0.1% FPR: loss {loss.metrics.tpr_at_0_1_fpr:.4f}" in roc
    assert f"at 1% FPR: loss {loss.metrics.tpr_at_1_fpr:.4f}" in roc
    assert "loss from every distinct score" in roc  # the full curve, not the stored one
    histograms = section(text, "histograms")
    assert histograms.count("<svg") == 2 and "members (400)" in histograms
    vulnerable = section(text, "vulnerable")
    pictures = images(vulnerable)
    assert len(pictures) == 2 and all(p.startswith(b"\x89PNG") for p in pictures)
    for attack in result.attacks:
        assert ", ".join(f"#{s}" for s in attack.vulnerable) in vulnerable


def test_a_long_curve_is_drawn_at_fewer_points_never_above_it(audited: tuple[Any, str]) -> None:
    rng = np.random.default_rng(0)
    member = rng.random(40_000) < 0.5
    scores = MembershipScores(rng.normal(size=40_000) + member, member,
                              np.arange(40_000), np.zeros(40_000, dtype=np.int64))  # fmt: skip
    big = attrs.evolve(audited[0].attack("loss"), scores=scores)
    full_fpr, full_tpr = scores.roc()
    fpr, tpr, source = curve(big)
    assert len(full_fpr) > 10 * MAX_CURVE_POINTS and len(fpr) <= MAX_CURVE_POINTS + 1
    assert source == f"{MAX_CURVE_POINTS} log-spaced FPRs"
    # Each point is the best the attack achieved within its FPR: never above the full curve.
    assert tpr.tolist() == [tpr_at_fpr(full_fpr, full_tpr, at) for at in fpr]
    assert fpr[0] == 0 and fpr[-1] == 1
    assert fpr[fpr > 0].min() == pytest.approx(full_fpr[full_fpr > 0].min())
    assert np.trapezoid(tpr, fpr) == pytest.approx(np.trapezoid(full_tpr, full_fpr), abs=2e-3)


def test_the_command_says_where_the_page_is(
    capsys: pytest.CaptureFixture[str], audited: tuple[Any, str], tmp_path: Path
) -> None:
    result, text = audited
    ws = str(result.path.parent.parent)
    code, out, _ = run_cli(capsys, "report", result.run_id[:18], "-w", ws)
    default = result.path / "report.html"
    assert code == 0 and out == f"report of run {result.run_id}: {default}\n"
    assert default.read_text().count("<section") == text.count("<section")
    code, out, _ = run_cli(
        capsys,
        "report",
        str(result.path / "results.json"),
        "-o",
        str(tmp_path / "new" / "page.html"),
    )
    assert code == 0 and (tmp_path / "new" / "page.html").is_file()
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["page.html"]  # no temporary left
    code, _, err = run_cli(capsys, "report", "nope", "-w", ws)
    assert code == 2 and "error:" in err


def shot(browser: Any, selector: str) -> list[bytes]:
    """Screenshots of the elements *selector* finds, each scrolled into view first (chromium
    crops an element's screenshot to the viewport)."""
    found = []
    for element in browser.find_elements("css selector", selector):
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        found.append(element.screenshot_as_png)
    return found


def test_the_page_renders_in_a_browser(
    audited: tuple[Any, str], browser: Any, tmp_path: Path
) -> None:
    _, text = audited
    page = tmp_path / "report.html"
    page.write_text(text)
    browser.get(page.as_uri())
    whole = browser.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True})
    (tmp_path / "report.png").write_bytes(base64.b64decode(whole["data"]))
    parts = {name: browser.find_element("id", name) for name in ("warnings", *SECTIONS)}
    for name, element in parts.items():
        assert element.is_displayed() and element.size["height"] > 40, name
    assert parts["warnings"].location["y"] < parts["audited"].location["y"]
    rows = browser.find_elements("css selector", "#metrics-table tbody tr")
    assert len(rows) == 2 + 20 and all(row.is_displayed() for row in rows)
    (width, height), drawn = coloured(shot(browser, "figure.roc svg")[0])
    assert width >= 500 and height >= 400, (width, height)
    assert drawn > 1500, drawn  # two curves and their markers
    histograms = shot(browser, "figure.histogram svg")
    assert len(histograms) == 2
    for png in histograms:
        (width, height), drawn = coloured(png)
        assert width >= 300 and drawn > 1200, (width, drawn)  # the bars, not only the legend keys
    # The CSP lets data: images load: a blocked or broken one has no natural size.
    widths = browser.execute_script(
        "return [...document.querySelectorAll('figure.vulnerable img')].map(i => i.naturalWidth)"
    )
    assert len(widths) == 2 and min(widths) > 100, widths
    for png in shot(browser, "figure.vulnerable img"):
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        assert (pixels < 80).sum() > 2000  # the digits' dark backgrounds


# ---- the runs that lack parts ----------------------------------------------------------------


@attrs.frozen
class Tagged:
    """Max confidence, with an option whose value a page must escape."""

    name: ClassVar[str] = "tagged"
    description: ClassVar[str] = "members get confident predictions"
    access: ClassVar[privbench.Access] = privbench.Access.LOGITS
    min_shadows: ClassVar[int] = 0
    tag: str = SCRIPT

    def score(self, context: privbench.AttackContext) -> np.ndarray:
        logits = context.target.population_logits("none")
        return torch.softmax(logits, dim=1).max(1).values.numpy()


def test_strings_from_the_record_are_escaped(audited: tuple[Any, str], tmp_path: Path) -> None:
    tagged = privbench.audit(
        attacks=[Tagged()],
        model="mlp",
        population=100,
        shadows=0,
        epochs=1,
        workspace=tmp_path / "ws",
    )
    text = render_report(tagged)
    assert SCRIPT not in text and f"tag={escape(SCRIPT)}" in section(text, "audited")
    # Every other string a record holds, edited into a copy of the real run.
    result, _ = audited
    copy = tmp_path / "copy"
    shutil.copytree(result.path, copy)
    record = json.loads((copy / "results.json").read_text())
    record["notes"] = ["<script>note()</script>"]
    record["warnings"] = ["<img src=x onerror=alert(1)>"]
    record["spec"]["defense"]["name"] = "<b>odd</b>"
    record["spec"]["dataset"]["options"]["root"] = "</dd><script>x()</script>"
    record["attacks"][0]["slices"][0]["value"] = "<i>v</i>"
    record["attacks"][1]["name"] = "<u>lira</u>"  # in the SVG text too (from its stored ROC)
    (copy / "results.json").write_text(json.dumps(record))
    text = render_report(privbench.load_run(copy))
    for raw in ("<script", "<img src=x", "<b>odd</b>", "</dd><script", "<i>v</i>", "<u>"):
        assert raw not in text, raw
    assert "&lt;script&gt;note()&lt;/script&gt;" in section(text, "notes")
    assert "&lt;img src=x onerror=alert(1)&gt;" in section(text, "warnings")
    assert "defense <b>&lt;b&gt;odd&lt;/b&gt;</b>" in text
    assert "class &lt;i&gt;v&lt;/i&gt;" in section(text, "metrics")
    assert "&lt;u&gt;lira&lt;/u&gt; (AUC " in section(text, "roc")  # the legend, as SVG text
    assert "holds no images for &lt;u&gt;lira&lt;/u&gt;" in section(text, "vulnerable")


def test_an_outputs_only_run_has_no_images(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    member, labels = np.arange(200) % 2 == 0, rng.integers(0, 10, 200)
    logits = rng.normal(size=(200, 10))
    logits[np.arange(200), labels] += 1.0 + member
    keep = rng.random((4, 200)) < 0.5
    reference = rng.normal(size=(4, 200, 10))
    reference[:, np.arange(200), labels] += 1.0 + keep
    result = privbench.audit_outputs(
        logits=logits,
        labels=labels,
        member=member,
        reference_logits=reference,
        reference_keep=keep,
        attacks=["loss", "lira"],
        workspace=tmp_path,
    )
    code, out, _ = run_cli(capsys, "report", str(result.path))
    assert code == 0 and str(result.path / "report.html") in out
    text = (result.path / "report.html").read_text()
    assert pool_text(result) == (
        "outputs only: the target's logits on 200 samples and the outputs of 4 reference "
        "model(s); no model was trained or queried"
    )
    assert escape(pool_text(result)) in section(text, "audited")
    assert "none: no model was trained" in section(text, "audited")
    assert "accuracy on members" in section(text, "utility")
    vulnerable = section(text, "vulnerable")
    assert "<img" not in vulnerable and not images(vulnerable)
    assert vulnerable.count("No images: this audit was given outputs alone") == 2
    for attack in result.attacks:
        assert attack.vulnerable and ", ".join(f"#{s}" for s in attack.vulnerable) in vulnerable
    assert (
        section(text, "roc").count("<svg") == 1 and section(text, "histograms").count("<svg") == 2
    )
    assert "outputs given as logits" in section(text, "notes")


def test_a_reconstruction_run_shows_its_grids(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, _ = run_cli(
        capsys,
        "run",
        "-a",
        "reconstruction",
        "--attack-opt",
        "steps=20",
        "--epochs",
        "50",
        "-w",
        str(tmp_path),
        "-q",
    )
    assert code == 0
    folder = privbench.load_run("latest", workspace=tmp_path).path
    # A defense that declares what it trained on (KIP) adds a second grid; training one takes
    # minutes, so the record says so itself, with the same grid.
    record = json.loads((folder / "results.json").read_text())
    (summary,) = record["reconstructions"]
    summary["declared_training_set"] = {
        "size": 10,
        "grid": summary["grid"],
        "metrics": summary["metrics"],
    }
    (folder / "results.json").write_text(json.dumps(record))
    text = render_report(privbench.load_run(folder))
    part = section(text, "reconstructions")
    assert images(part) == [(folder / summary["grid"]).read_bytes()] * 2
    assert part.count(escape(reconstruction_metrics(summary["metrics"]))) == 2
    assert "the 10 images the defense trained the released model on" in part
    assert "access <b>parameters</b>" in section(text, "audited")
    for name in ("metrics", "roc", "histograms", "vulnerable"):
        assert "No membership attack in this run" in section(text, name)
    assert "victim setting" in section(text, "notes")


def test_your_target_and_a_run_whose_folder_is_gone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "mine.safetensors"
    save_file(
        {k: v.contiguous() for k, v in MLP().create((1, 8, 8), 10).state_dict().items()},
        str(weights),
    )
    result = privbench.audit(
        target=weights,
        members=np.arange(100),
        model="mlp",
        attacks=["loss"],
        shadows=0,
        population=200,
        workspace=tmp_path,
    )
    digest = result.spec.target["sha256"]
    assert pool_text(result) == (
        f"your target ({weights}, sha256 {digest[:12]}…, 100 members) + 0 reference model(s), "
        "200 samples"
    )
    shutil.rmtree(result.path)  # what the database holds is left: no scores, no images
    code, _, err = run_cli(capsys, "report", "latest", "-w", str(tmp_path))
    assert code == 2 and "give --output/-o" in err
    code, _, _ = run_cli(
        capsys, "report", "latest", "-w", str(tmp_path), "-o", str(tmp_path / "r.html")
    )
    text = (tmp_path / "r.html").read_text()
    assert code == 0 and escape(pool_text(result)) in section(text, "audited")
    assert "loss from the stored compact ROC" in section(text, "roc")
    assert "no per-sample scores stored" in section(text, "histograms")
    assert "No images: the run&#x27;s folder is gone" in section(text, "vulnerable")
