"""``python -m kbrelease.cli``: the same as the ``kbrelease`` command."""

from kbrelease.cli import main

main()
