"""Text edges: corpora to fixed-length token blocks and held-out prompts; causal LM loading."""
