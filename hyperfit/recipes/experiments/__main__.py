"""``python -m hyperfit.recipes.experiments ...``: the same command as ``hyperfit experiment ...``."""

import sys

from hyperfit.recipes.experiments.command import cli

if __name__ == "__main__":
    sys.exit(cli())
