"""Image edges: tokenizers (palette, VQ-VAE), image sets, the autoregressive prior over codes, grids."""
