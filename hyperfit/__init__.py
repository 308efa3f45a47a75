"""hyperfit: hyperfitting (Carlsson et al., ICLR 2025) for causal LMs and VQ-token image generators."""

__version__ = "0.1.0"
