"""The ``hyperfit`` command: ``hyperfit fit-text | report`` (more subcommands come with the image and eval suites).

Each subcommand hands its arguments to a recipe's ``cli(argv)``; recipes are also runnable directly under
``accelerate launch`` (see ``scripts/``).
"""

from __future__ import annotations

import sys

USAGE = """usage: hyperfit COMMAND [options]

commands:
  fit-text   hyperfit a causal LM on text and evaluate it before/after (try: --preset cpu-demo)
  pretrain-image   build the offline image tokenizer + prior once (runs/cache/image-prior; reused after)
  fit-image  hyperfit that image prior and compare completions before/after (preset cpu-demo by default)
  eval       models × decoding strategies on the same prompts: --models original=SPEC,hyperfitted=RUN_DIR
  experiment {data-size,data-order,domain,lr-epochs,early-stop,which-layers} [fit-text options] --out DIR:
             the paper's data experiments (§6) and reviewer ablations, a table and a plot each
  retention  what hyperfitting costs elsewhere: cloze probe and perplexity on every bundled corpus, lm-eval tasks
             --models original=smollm2-135m-gguf,hyperfitted=RUN_DIR --tasks cloze,perplexity
  analyze    why it works, on an original/hyperfitted pair: per-layer effective dimension and change, static
             per-token reweighting, rank reordering: --hyperfitted RUN_DIR --out DIR
  compare    one cross-modal table of finished runs: hyperfit compare RUN_DIR... --out DIR
  plan       memory per GPU of a run (weights, gradients, Adam, activations), whether it fits, the accelerate
             config and launch command: hyperfit plan --model 8e9 --gpus 8 --gpu_memory_gb 80 --strategy fsdp
  report     rewrite report.md / report.html of finished run directories: hyperfit report RUN_DIR...
  study      human preference study: create | annotators | serve | report | simulate | export | import
             (hyperfit study --help)

`hyperfit COMMAND --help` lists a command's options."""


def _refuse_unfinished(run_dirs: list[str]) -> bool:
    """Print one sentence for the first directory that is not a finished run (no summary.json); True if any."""
    from pathlib import Path

    for arg in run_dirs:
        if not (Path(arg) / "summary.json").exists():
            print(
                f"error: {arg} is not a finished run directory (no summary.json); pass a run's --out.",
                file=sys.stderr,
            )
            return True
    return False


def _report(argv: list[str]) -> int:
    from pathlib import Path

    from hyperfit.common.report import write_report
    from hyperfit.common.runs import HyperfitError

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: hyperfit report RUN_DIR [RUN_DIR ...]  (fit, eval, image or experiment directories)")
        return 0 if argv else 2
    if _refuse_unfinished(argv):
        return 2
    for arg in argv:
        if (Path(arg) / "experiment.json").exists():
            # An experiment's report is built from its variants, not from one run's summary.
            from hyperfit.recipes.experiments import rewrite_report

            try:
                print(rewrite_report(arg))
            except HyperfitError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            continue
        print(write_report(arg))
    return 0


def _compare(argv: list[str]) -> int:

    from hyperfit.common.report import write_comparison

    if "--out" not in argv or argv.index("--out") == len(argv) - 1 or argv[0] in ("-h", "--help"):
        print("usage: hyperfit compare RUN_DIR [RUN_DIR ...] --out DIR", file=sys.stderr)
        return 2
    at = argv.index("--out")
    out, runs = argv[at + 1], argv[:at] + argv[at + 2 :]
    if _refuse_unfinished(runs):
        return 2
    print(write_comparison(runs, out))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "fit-text":
        from hyperfit.recipes.fit_text import cli

        return cli(rest)
    if command == "eval":
        from hyperfit.recipes.eval_text import cli as eval_cli

        return eval_cli(rest)
    if command == "pretrain-image":
        from hyperfit.recipes.pretrain_image import cli

        return cli(rest)
    if command == "fit-image":
        from hyperfit.recipes.fit_image import cli

        return cli(rest)
    if command == "experiment":
        from hyperfit.recipes.experiments import cli

        return cli(rest)
    if command == "study":
        from hyperfit.study.cli import cli as study_cli

        return study_cli(rest)
    if command == "retention":
        from hyperfit.recipes.retention import cli

        return cli(rest)
    if command == "plan":
        from hyperfit.recipes.plan import cli

        return cli(rest)
    if command == "analyze":
        from hyperfit.recipes.analyze import cli

        return cli(rest)
    if command == "compare":
        return _compare(rest)
    if command == "report":
        return _report(rest)
    print(f"error: unknown command {command!r}; run `hyperfit --help` for the list.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
