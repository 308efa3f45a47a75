"""The ``hyperfit`` command: one subcommand per recipe.

    hyperfit fit-text         hyperfit a causal LM on text; evaluate before/after (recipes/fit_text.py)
    hyperfit pretrain-image   build the offline image tokenizer and prior once (recipes/pretrain_image.py)
    hyperfit fit-image        hyperfit an image prior; compare completions before/after (recipes/fit_image.py)
    hyperfit eval             models × decoding strategies on the same prompts (recipes/eval_text.py)
    hyperfit experiment NAME  the paper's data experiments and the ablations (recipes/experiments/)
    hyperfit reproduce        the paper's protocol end to end, with its claims table (reproduce/)
    hyperfit retention        what hyperfitting costs elsewhere: cloze probe, perplexity, lm-eval (recipes/retention.py)
    hyperfit analyze          why it works, on an original/hyperfitted pair (recipes/analyze.py)
    hyperfit compare          finished runs side by side, across modalities (recipes/compare.py)
    hyperfit plan             memory per GPU of a run and the launch command (recipes/plan.py)
    hyperfit report           rewrite the reports of finished run directories (recipes/report.py)
    hyperfit study            the human preference study: create, serve, report, ... (study/cli.py)

Each subcommand hands its arguments to that recipe's ``cli(argv)``; ``hyperfit COMMAND --help`` lists its options.
The training recipes also run under ``accelerate launch`` (see ``scripts/``).
"""

from __future__ import annotations

import importlib
import sys

USAGE = """usage: hyperfit COMMAND [options]

commands:
  fit-text         hyperfit a causal LM on text and evaluate it before/after (try: --preset cpu-demo)
  pretrain-image   build the offline image tokenizer + prior once (runs/cache/image-prior; reused after)
  fit-image        hyperfit that image prior and compare completions before/after (preset cpu-demo by default)
  eval             models × decoding strategies on the same prompts: --models original=SPEC,hyperfitted=RUN_DIR
  experiment {data-size,data-order,domain,lr-epochs,early-stop,which-layers} [fit-text options] --out DIR:
                   the paper's data experiments (§6) and reviewer ablations, tables and plots each
  reproduce        the paper's protocol end to end into one directory: long continuations on held-out domains,
                   tuned sampling baselines, a larger model, images, and every claim's verdict: --scale cpu|paper
  retention        what hyperfitting costs elsewhere: cloze probe and perplexity on every bundled corpus,
                   lm-eval tasks: --models original=smollm2-135m-gguf,hyperfitted=RUN_DIR --tasks cloze,perplexity
  analyze          why it works, on an original/hyperfitted pair: per-layer effective dimension and change,
                   static per-token reweighting, rank reordering: --hyperfitted RUN_DIR --out DIR
  compare          finished runs side by side, with plots: hyperfit compare RUN_DIR... --out DIR
  plan             memory per GPU of a run (weights, gradients, Adam, activations), whether it fits, the
                   accelerate config and launch command: hyperfit plan --model 8e9 --gpus 8 --strategy fsdp
  report           rewrite report.md / report.html of finished run directories: hyperfit report RUN_DIR...
  study            human preference study: create | annotators | serve | report | simulate | export | import
                   (hyperfit study --help)

`hyperfit COMMAND --help` lists a command's options; `hyperfit --version` prints the version."""

# command -> the module whose cli(argv) runs it (imported only when that command runs: no torch for --help)
COMMANDS = {
    "fit-text": "hyperfit.recipes.fit_text",
    "pretrain-image": "hyperfit.recipes.pretrain_image",
    "fit-image": "hyperfit.recipes.fit_image",
    "eval": "hyperfit.recipes.eval_text",
    "experiment": "hyperfit.recipes.experiments",
    "reproduce": "hyperfit.reproduce.main",
    "retention": "hyperfit.recipes.retention",
    "analyze": "hyperfit.recipes.analyze",
    "compare": "hyperfit.recipes.compare",
    "plan": "hyperfit.recipes.plan",
    "report": "hyperfit.recipes.report",
    "study": "hyperfit.study.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-V", "--version"):
        from hyperfit import __version__

        print(f"hyperfit {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; run `hyperfit --help` for the list.", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command]).cli(rest)


if __name__ == "__main__":
    sys.exit(main())
