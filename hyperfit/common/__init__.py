"""Modality-agnostic layer: trainer, decoding, analysis, run directories. Imports nothing from text/ or image/."""
