"""``python -m autoprune.cli``: the console script."""

from autoprune.cli import main

main()
