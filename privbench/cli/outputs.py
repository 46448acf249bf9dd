"""``privbench outputs``: audit a model by its outputs alone, a client of
:func:`privbench.audit_outputs` (files read by :func:`privbench.engine.outputs.read_outputs`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from privbench.api import audit_outputs
from privbench.cli.common import WorkspaceOption
from privbench.cli.run import print_result
from privbench.engine.outputs import read_outputs
from privbench.engine.progress import Callback, PrintProgress
from privbench.errors import OptionError
from privbench.plugins import Registry
from privbench.plugins.options import parse_assignments


def register(app: typer.Typer, registry: Registry) -> None:
    @app.command()
    def outputs(
        outputs_file: Path = typer.Argument(
            ...,
            help="The target's outputs: .npz with logits, probabilities or loss, plus labels and "
            "member (and sample); or .csv with columns member, label, and loss or logit_0.. or "
            "prob_0.. .",
        ),
        reference: Path | None = typer.Option(
            None,
            "--reference",
            help="Reference models' outputs: .npz with the same kind stacked (models first) "
            "and keep (models x samples).",
        ),
        attack: list[str] = typer.Option(
            [],
            "--attack",
            "-a",
            help="Attack to run [default: every installed attack the outputs can serve].",
        ),
        attack_opt: list[str] = typer.Option(
            [], "--attack-opt", help="key=value (or attack.key=value with several attacks)."
        ),
        slices: list[str] = typer.Option(
            [],
            "--slice",
            help="Also per slice: class, correct, or FILE.csv:COLUMN (keyed by sample); "
            "repeatable.",
        ),
        name: str = typer.Option("outputs", "--name", help="What the results call the data."),
        seed: int = typer.Option(0, "--seed"),
        workspace: Path | None = WorkspaceOption,
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    ) -> None:
        """Audit a model trained elsewhere by its outputs on members and non-members (and
        reference models' outputs, for LiRA and RMIA): no model is trained or queried."""
        target = read_outputs(str(outputs_file))
        arrays: dict = {target["kind"]: target["outputs"]}
        if reference is not None:
            ref = read_outputs(str(reference), reference=True)
            if ref["kind"] != target["kind"]:
                raise OptionError(
                    f"{reference} holds {ref['kind']} but {outputs_file} holds {target['kind']}"
                )
            arrays |= {f"reference_{ref['kind']}": ref["outputs"], "reference_keep": ref["keep"]}
        callback = Callback() if quiet or sys.stdout.isatty() else PrintProgress()
        result = audit_outputs(
            member=target["member"],
            labels=target.get("labels"),
            sample_ids=target.get("sample"),
            attacks=attack or None,
            attack_options=parse_assignments(attack_opt, flag="--attack-opt"),
            slices=slices,
            name=name,
            seed=seed,
            workspace=workspace,
            callback=callback,
            registry=registry,
            **arrays,
        )
        print_result(result)
        if result.failures:  # the others' results are recorded; the exit status says not all
            raise typer.Exit(1)
