"""Helper for test_multiprocess.py: train a tiny model under `accelerate launch` and record the losses."""

import json
import sys

import torch

from hyperfit.common.config import TrainConfig
from hyperfit.common.runs import Run, write_json
from hyperfit.common.train import build_accelerator, train
from tests.conftest import make_tiny_llama

out = sys.argv[1]
cfg = TrainConfig(lr=3e-3, epochs=2, batch_size=4, precision="fp32", eval_every_epochs=1)
accelerator = build_accelerator(cfg, cpu=True)
run = Run.open(out, writer=accelerator.is_main_process, barrier=accelerator.wait_for_everyone)
ids = torch.randint(3, 97, (8, 16), generator=torch.Generator().manual_seed(1))
result = train(make_tiny_llama(97), ids, cfg, accelerator=accelerator, run=run)
if accelerator.is_main_process:
    losses = [r["loss"] for r in run.metrics() if r["kind"] == "train"]
    norm = sum(float(p.detach().abs().sum()) for p in result["model"].parameters())
    write_json(
        f"{out}/result.json",
        {
            "world_size": accelerator.num_processes,
            "losses": losses,
            "weight_norm": norm,
            "micro": result["micro_batch_size"],
            "accumulation": result["accumulation_steps"],
        },
    )
print(json.dumps({"rank": accelerator.process_index, "world": accelerator.num_processes}))
