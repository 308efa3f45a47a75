"""Hyperfit an autoregressive image prior: `accelerate launch scripts/fit_image.py` (preset cpu-demo by default).

The recipe itself reads top to bottom in hyperfit/recipes/fit_image.py (kept inside the package so the
`hyperfit fit-image` command and the tests can call its main(cfg) too). Build the prior first:
`python scripts/pretrain_image.py`.
"""

import sys

from hyperfit.recipes.fit_image import cli

if __name__ == "__main__":
    sys.exit(cli())
