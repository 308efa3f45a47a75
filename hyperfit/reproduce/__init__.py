"""`hyperfit reproduce`: the paper's protocol end to end in one resumable directory with one report.

Hyperfit a model; decode held-out prompts from several domains for 256 tokens with the original model (greedy,
the paper's top-p, and samplers tuned with an equal budget on a development split), the hyperfitted model
(greedy, greedy + citation blocker, its own tuned sampler) and a larger original of another family; measure
repetition, diversity and copying per domain; hyperfit the image prior; and state every claim of the paper with
its measured figure, interval and verdict (``claims.json``). ``--scale cpu`` fits 2 CPU cores, ``--scale paper``
is the same plan with the paper's models, data and recipe for GPUs.
"""
