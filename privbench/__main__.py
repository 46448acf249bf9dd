"""``python -m privbench``: the command line."""

from privbench.cli import main

main()
