"""Modality-agnostic layer: trainer, decoding, analysis, run directories. Imports no modality package."""
