"""Helper for test_multiprocess.py: train a tiny model under `accelerate launch` and record the losses.

``python tests/mp_train.py OUT [EPOCHS]``: with an FSDP accelerate config the model is sharded (recorded as
``sharded``: every parameter a DTensor holding only part of its rows here); the full model is gathered and saved
to OUT/model. A second call with more EPOCHS resumes from OUT's checkpoint.
"""

import json
import sys

import torch

from hyperfit.common.config import TrainConfig
from hyperfit.common.runs import Run, write_json
from hyperfit.common.shard import save_full_model, sharding
from hyperfit.common.train import build_accelerator, train
from tests.conftest import make_tiny_llama

out = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
cfg = TrainConfig(lr=3e-3, epochs=epochs, batch_size=4, precision="fp32", eval_every_epochs=1)
accelerator = build_accelerator(cfg, cpu=True)
run = Run.open(
    out, resume=len(sys.argv) > 2, writer=accelerator.is_main_process, barrier=accelerator.wait_for_everyone
)
ids = torch.randint(3, 97, (8, 16), generator=torch.Generator().manual_seed(1))
evaluations = []  # epochs this process evaluated


def evaluate(model, *, epoch, step):
    evaluations.append(epoch)
    return {"eval_logit_sum": float(model(input_ids=ids[:2]).logits.double().sum())}


result = train(make_tiny_llama(97), ids, cfg, accelerator=accelerator, run=run, evaluate=evaluate)
model = result["model"]
local = [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]
shards = {
    "evaluations": evaluations,
    "all_dtensors": all(type(p).__name__ == "DTensor" for p in model.parameters()),
    "local_numel": sum(t.numel() for t in local),
    "full_numel": sum(p.numel() for p in model.parameters()),
}
gathered = [None] * accelerator.num_processes if accelerator.num_processes > 1 else None
if gathered is not None:
    torch.distributed.all_gather_object(gathered, {"rank": accelerator.process_index, **shards})
save_full_model(model, f"{out}/model", accelerator)
if accelerator.is_main_process:
    records = run.metrics()
    write_json(
        f"{out}/result.json",
        {
            "world_size": accelerator.num_processes,
            "sharding": sharding(accelerator),
            "shards": gathered or [shards],
            "losses": [r["loss"] for r in records if r["kind"] == "train"],
            "evals": [r["eval_logit_sum"] for r in records if r["kind"] == "eval"],
            "micro": result["micro_batch_size"],
            "accumulation": result["accumulation_steps"],
        },
    )
print(json.dumps({"rank": accelerator.process_index, "world": accelerator.num_processes}))
