"""Pretrain the offline image tokenizer and prior: `accelerate launch scripts/pretrain_image.py`.

The recipe reads top to bottom in hyperfit/recipes/pretrain_image.py; `hyperfit pretrain-image` calls the same
cli. A finished prior with the same settings is reused, never rebuilt (pass --overwrite to rebuild).
"""

import sys

from hyperfit.recipes.pretrain_image import cli

if __name__ == "__main__":
    sys.exit(cli())
