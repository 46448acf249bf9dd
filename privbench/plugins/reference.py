"""The options reference of ``docs/plugins.md``, generated from the code so that it cannot drift:
every built-in plugin's options with their type, default and one-line meaning (the first sentence
of each option's attribute docstring, :func:`privbench.plugins.options.option_summary`).

Regenerate the page's section (between its ``options-reference`` markers) after changing an
option::

    python -m privbench.plugins.reference            # rewrites docs/plugins.md in place
    python -m privbench.plugins.reference PAGE.md    # another page with the same markers
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from privbench.plugins.options import describe_options, option_summary
from privbench.plugins.registry import KINDS, Registry

START = "<!-- options-reference:start -->"
END = "<!-- options-reference:end -->"
COMMAND = "python -m privbench.plugins.reference"

_TITLES = {"attack": "Attacks", "defense": "Defenses", "scorer": "Scorers", "model": "Models"}


def options_reference_markdown(registry: Registry, distribution: str | None = "privbench") -> str:
    """Markdown tables of every option of the plugins that *distribution* provides (None: all
    loaded plugins), a table per plugin, by kind and then name."""
    lines: list[str] = []
    for kind in KINDS:
        components = [
            c
            for c in registry.components(kind)
            if distribution is None or c.plugin.distribution == distribution
        ]
        if not components:
            continue
        lines += [f"### {_TITLES.get(kind, kind.capitalize() + 's')}", ""]
        for component in components:
            description = getattr(component.cls, "description", "")
            lines += [f"#### `{component.name}` ({kind})", "", _cell(description), ""]
            rows = describe_options(component.cls)
            if not rows:
                lines += ["No options.", ""]
                continue
            meanings = option_summary(component.cls)
            lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
            for name, kind_of, default in rows:
                shown = f"`{_cell(default)}`" if default else "(required)"
                lines.append(
                    f"| `{name}` | `{_cell(kind_of)}` | {shown} | {_cell(meanings[name])} |"
                )
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def marked_section(page: str) -> str:
    """The text between the page's markers (raises ``ValueError`` without them)."""
    _, start, rest = page.partition(START)
    inside, end, _ = rest.partition(END)
    if not start or not end:
        raise ValueError(f"no '{START}' ... '{END}' section")
    return inside


def with_section(page: str, section: str) -> str:
    """*page* with the text between its markers replaced by *section* (blank lines around)."""
    old = marked_section(page)
    return page.replace(START + old + END, f"{START}\n\n{section.strip()}\n\n{END}", 1)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    path = Path(arguments[0] if arguments else "docs/plugins.md")
    page = path.read_text()
    updated = with_section(page, options_reference_markdown(Registry.from_environment()))
    path.write_text(updated)
    print(f"{path}: options reference {'updated' if updated != page else 'already current'}")
    return 0


def _cell(text: str) -> str:
    # A pipe would end the table cell, even inside a code span.
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    raise SystemExit(main())
