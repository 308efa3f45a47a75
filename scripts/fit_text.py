"""Hyperfit a causal LM on text: `accelerate launch scripts/fit_text.py --preset cpu-demo`.

The recipe itself reads top to bottom in hyperfit/recipes/fit_text.py (kept inside the package so the
`hyperfit fit-text` command and the tests can call its main(cfg) too).
"""

import sys

from hyperfit.recipes.fit_text import cli

if __name__ == "__main__":
    sys.exit(cli())
