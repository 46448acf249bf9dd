"""An audit's result as the tables and lines ``privbench run`` prints: the attack table with
utility, scorers, the defense's measurements and its DP bound, memorization, reconstructions,
and where the run's files are. :func:`report` gives rich renderables (the CLI prints them);
:func:`summary_text` the same as plain text (``AuditResult.summary()``).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from privbench.results.parts import ReconstructionResult

if TYPE_CHECKING:  # the result imports this module to print itself
    from privbench.results.result import AuditResult

WIDTH = 120
"""Columns of text output: enough for the attack table to stay whole."""


def format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.3g}"
    return str(value)


def run_title(result: AuditResult) -> str:
    spec = result.spec
    if spec.target is not None:
        return (
            f"{spec.dataset.name} · {spec.model.name} · defense {spec.defense.name}"
            f" · your target ({spec.target['members']} members) + {spec.shadows} reference"
            f" model(s) x {spec.population} samples"
        )
    if spec.one_run is not None:
        return (
            f"{spec.dataset.name} · {spec.model.name} · defense {spec.defense.name}"
            f" · one-run audit: 1 model, {spec.one_run['canaries']} {spec.one_run['canary_kind']}"
            f" canaries in {spec.population} samples"
        )
    return (
        f"{spec.dataset.name} · {spec.model.name} · defense {spec.defense.name}"
        f" · {spec.models} models, {spec.targets} target(s) x {spec.population} samples"
    )


def utility_line(result: AuditResult) -> str:
    u, training = result.utility, result.training
    together = training.target_meta.get("ensemble")
    how = f" ({together} at once)" if together and training.trained else ""
    if "outputs" in training.target_meta:
        return (
            f"target accuracy on members {u.train_accuracy:.3f}, on non-members "
            f"{u.test_accuracy:.3f} · outputs of {result.spec.shadows} reference model(s) given; "
            "no model trained"
        )
    which = "reference models" if result.spec.target is not None else "models"
    return (
        f"target accuracy: train {u.train_accuracy:.3f}, test {u.test_accuracy:.3f} · "
        f"{which} trained {training.trained}{how}, reused {training.reused}"
    )


def attacks_table(result: AuditResult) -> Table:
    table = Table(title=run_title(result), title_justify="left", box=box.SIMPLE_HEAD)
    columns = ("attack", "access", "AUC", "AUC/target", "TPR@0.1%FPR", "TPR@1%FPR", "bal.acc",
               "advantage", "ε≥ (95%)", "s")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("attack", "access") else "right")
    for attack in result.attacks:
        m, spread = attack.metrics, attack.per_target
        auc_per_target = (
            f"{spread.mean['auc']:.3f}±{spread.std['auc']:.3f}" if "auc" in spread.mean else "-"
        )
        table.add_row(
            attack.name,
            attack.access,
            format_metric(m.auc),
            auc_per_target,
            *map(
                format_metric,
                (
                    m.tpr_at_0_1_fpr,
                    m.tpr_at_1_fpr,
                    m.balanced_accuracy,
                    m.advantage,
                    m.epsilon_lower,
                ),
            ),
            f"{attack.seconds:.1f}",
        )
    table.caption = (
        "AUC and TPRs over the pooled scores of all target turns; AUC/target: mean±sd\n"
        + utility_line(result)
    )
    table.caption_justify = "left"
    return table


def slices_table(result: AuditResult) -> Table | None:
    """Each attack's metrics per slice, where the run sliced its samples."""
    if not any(attack.slices for attack in result.attacks):
        return None
    table = Table(title="per slice", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("attack", "slice", "members", "non-members", "AUC", "TPR@1%FPR", "bal.acc",
                   "ε≥ (95%)"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("attack", "slice") else "right")
    for attack in result.attacks:
        for part in attack.slices:
            m = part.metrics
            shown = () if m is None else (m.auc, m.tpr_at_1_fpr, m.balanced_accuracy,
                                          m.epsilon_lower)  # fmt: skip
            numbers = tuple(map(format_metric, shown)) if shown else ("-",) * 4
            table.add_row(attack.name, f"{part.slice} {part.value}", str(part.members),
                          str(part.non_members), *numbers)  # fmt: skip
    return table


def _estimate_line(result: AuditResult, field: str, title: str) -> str | None:
    """Each attack's two-sided ε estimate *field* with its interval (older runs lack it)."""
    parts = [
        f"{a.name} {m[field]:.2f} [{m[f'{field}_low']:.2f}, {m[f'{field}_high']:.2f}]"
        for a in result.attacks
        if (m := a.metrics.as_dict())[field] == m[field]  # not NaN
    ]
    return f"{title}: " + "; ".join(parts) if parts else None


def gdp_line(result: AuditResult) -> str | None:
    """Each attack's two-sided ε from the Gaussian-DP fit of its ROC."""
    return _estimate_line(
        result, "epsilon_gdp", "ε from the Gaussian-DP fit of the ROC, 95% interval"
    )


def bayes_line(result: AuditResult) -> str | None:
    """Each attack's Bayesian ε of the test ``epsilon_lower`` evaluates."""
    title = "Bayesian ε of the ε≥ test, posterior median [95% credible]"
    return _estimate_line(result, "epsilon_bayes", title)


def one_run_lines(result: AuditResult) -> list[str]:
    """Each attack's one-run ε lower bound, beside the accountant's ε when a defense has one."""
    bounds = [(a.name, a.one_run) for a in result.attacks if a.one_run is not None]
    if not bounds:
        return []
    accountant = result.training.target_meta.get("epsilon")
    beside = f" (the accountant's ε: {float(accountant):.3g})" if accountant is not None else ""
    confidence, delta = bounds[0][1].confidence, bounds[0][1].delta
    lines = [f"one-run audit (Steinke et al.), ε lower bound at {confidence:.0%} confidence "
             f"for δ={delta:.0e}{beside}:"]  # fmt: skip
    for name, bound in bounds:
        guesses = " + ".join(
            f"{count} {side}" for count, side in ((bound.guesses_in, "in"),
                                                  (bound.guesses_out, "out")) if count
        )  # fmt: skip
        lines.append(
            f"  {name}: ε ≥ {bound.epsilon:.3f} ({bound.correct} of {bound.guesses} guesses "
            f"right: {guesses}; {bound.included} of {bound.canaries} canaries trained on; best "
            f"of {bound.choices} choices of guesses)"
        )
    return lines


def dp_bound_line(result: AuditResult) -> str | None:
    bound = result.dp_bound
    if bound is None:
        return None
    return (
        f"the accountant's (ε={bound.epsilon:.3g}, δ={bound.delta:.2g})-DP allows at most: "
        f"AUC {bound.auc:.4f}, TPR@0.1%FPR {bound.tpr_at_0_1_fpr:.4f}, "
        f"TPR@1%FPR {bound.tpr_at_1_fpr:.4f}, advantage {bound.advantage:.4f}"
    )


def defense_line(result: AuditResult) -> str | None:
    """The defense's own measurements on the first target, or None for none to show."""
    shown = {
        key: value
        for key, value in sorted(result.training.defense_measurements.items())
        if isinstance(value, int | float | str | bool)
    }
    if not shown:
        return None
    return f"defense {result.spec.defense.name} (first target): " + ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in shown.items()
    )


def reconstruction_metrics(m: dict[str, Any]) -> str:
    bar = f"SSIM > {m['ssim_threshold']:g}"
    parts = []
    if "fraction_identified" in m:
        identified = f"identified {m['fraction_identified']:.0%} (10% nearer than any non-member"
        if "chance_fraction_identified" in m:
            identified += f"; typical images reach {m['chance_fraction_identified']:.0%}"
        parts.append(identified + ")")
    recovered = f"{bar} {m['fraction_recovered']:.0%}"
    if "chance_fraction_recovered" in m:
        recovered += f" (typical images reach {m['chance_fraction_recovered']:.0%})"
    parts += [recovered, f"mean SSIM {m['mean_ssim']:.3f}", f"mean L2 {m['mean_l2']:.3f}"]
    return ", ".join(parts)


def reconstruction_lines(summary: ReconstructionResult) -> list[str]:
    lines = [
        f"reconstruction attack {summary.name} on target {summary.target} "
        f"({summary.candidates} candidates for {summary.train_size} training images): "
        + reconstruction_metrics(summary.metrics)
    ]
    declared = summary.declared_training_set
    if declared is not None:
        lines.append(
            f"  against the {declared['size']} images the defense trained the released model on "
            "instead: " + reconstruction_metrics(declared["metrics"])
        )
    return lines


def memorization_line(result: AuditResult) -> str | None:
    summary = result.memorization
    if summary is None:
        return None
    line = (
        f"memorization over {summary.models} models: mean {summary.mean:.3f}, "
        f"{summary.above_0_5} samples above 0.5"
    )
    if summary.spearman_curvature is not None:
        line += (
            f"; Spearman rank correlation with curvature {summary.spearman_curvature:.3f} "
            f"(p = {summary.spearman_p_value:.2g})"
        )
    return line


def scorers_table(result: AuditResult) -> Table:
    """Each reported scorer's median for members and non-members of the targets."""
    table = Table(
        title="scorers on the target models: median over members and non-members",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("scorer", "members", "non-members", "membership AUC", "access"):
        table.add_column(column, justify="left" if column in ("scorer", "access") else "right")
    for name, summary in result.scorers.items():
        table.add_row(
            name,
            f"{summary.members['median']:.4g}",
            f"{summary.non_members['median']:.4g}",
            format_metric(summary.membership_auc),
            summary.access,
        )
    return table


def report(result: AuditResult) -> list[RenderableType]:
    """A run's table, its bound, scorer and memorization lines, and where its files are."""
    out: list[RenderableType] = list(result.notes)
    folder = result.path
    if result.attacks or not result.reconstructions:
        out.append(attacks_table(result))
    else:
        out += [run_title(result), utility_line(result)]
    sliced = slices_table(result)
    if sliced is not None:
        out.append(sliced)
    out += [f"warning: {warning}" for warning in result.warnings]
    out += [f"failed: {failure.line}" for failure in result.failures]
    gdp = gdp_line(result)
    if gdp:
        out.append(gdp)
    bayes = bayes_line(result)
    if bayes:
        out.append(bayes)
    out += one_run_lines(result)
    if result.scorers:
        out.append(scorers_table(result))
        if folder is not None:
            out += [f"{name}: {folder / f'scores-{name}.csv'}" for name in result.scorers]
    out += [line for line in (defense_line(result), dp_bound_line(result)) if line]
    line = memorization_line(result)
    if line is not None:
        out.append(line)
        if folder is not None:
            out.append(f"memorization: {folder / 'memorization.csv'}")
    for summary in result.reconstructions:
        out += reconstruction_lines(summary)
        if folder is not None:
            out.append(f"reconstructions beside training images: {folder / summary.grid}")
            if summary.declared_training_set is not None:
                grid = summary.declared_training_set["grid"]
                out.append(f"reconstructions beside the defense's training images: {folder / grid}")
    if folder is not None:
        out.append(f"results: {folder / 'results.json'}")
        if result.attacks:
            out.append(f"ROC plot: {folder / 'roc.png'}")
    return out


def summary_text(result: AuditResult, width: int = WIDTH) -> str:
    """:func:`report` as plain text."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, highlight=False, soft_wrap=True)
    for part in report(result):
        console.print(part, markup=False) if isinstance(part, str) else console.print(part)
    return buffer.getvalue()
