"""The text half of a reproduction, as tasks: hyperfit (fit-text), tune the samplers on development prompts,
decode the test prompts with every decoding, decode a larger original of another family, and the deep-tail
ranks. Every task writes one file (atomically) and is skipped when that file exists, so ``--resume`` continues.

Layout under OUT: ``fit/`` (a fit-text run: training and held-out ids, greedy continuations of the original and
hyperfitted models, teacher-forced sharpness), ``tune/<model>/<family>_<i>.jsonl`` (development decodes),
``decodes/<model>/<decoding>.jsonl`` (test decodes), ``analysis/tail.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from hyperfit.common.analysis import ngram_repeats, ttr
from hyperfit.common.compare import STRATEGIES, Strategy, run_strategy
from hyperfit.common.config import parse_recipe_config
from hyperfit.common.hardware import resolve_precision
from hyperfit.common.runs import HyperfitError, read_json, read_jsonl, write_json, write_text_atomic
from hyperfit.common.stats import mean_ci
from hyperfit.common.tuning import FAMILIES, select_trial
from hyperfit.recipes import fit_text
from hyperfit.reproduce.config import ReproduceConfig
from hyperfit.text.data import TextDataConfig, load_documents
from hyperfit.text.eval_sets import domain_name, parse_eval_data
from hyperfit.text.model import ModelConfig, eos_ids, load_causal_lm

TAIL_BINS = (1, 2, 3, 6, 11, 101, 1001)  # rank bins [1], [2], [3-5], [6-10], [11-100], [101-1000], >1000


@dataclass
class Task:
    """One step of the plan: ``run()`` writes ``output``; ``cost`` is its expected share of the wall time."""

    name: str
    output: Path
    cost: float
    run: object

    def done(self) -> bool:
        return self.output.exists()


def write_records(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class TextPlan:
    """The text tasks of one reproduction and the state they share (models are loaded once, when first needed)."""

    def __init__(self, cfg: ReproduceConfig, out: Path):
        self.cfg, self.out = cfg, out
        self.fit_dir = out / "fit"
        self._models: dict[str, tuple] = {}
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.precision = resolve_precision("auto", self.device)

    # ---------------------------------------------------------------- the fit-text run and what it recorded
    def fit_argv(self) -> list[str]:
        c = self.cfg
        return [
            *("--model", c.model, "--data", c.data, "--eval_data", c.eval_data),
            *("--n_train", str(c.n_train), "--block_len", str(c.block_len)),
            *(
                "--n_eval",
                str(c.n_dev + c.n_test),
                "--eval_len",
                str(self.cfg.prompt_tokens + c.max_new_tokens),
            ),
            *(
                "--epochs",
                str(c.epochs),
                "--eval_every_epochs",
                str(c.epochs),
                "--batch_size",
                str(c.batch_size),
            ),
            *("--lr", str(c.lr), "--weight_decay", "0", "--optimizer", "adam", "--seed", str(c.seed)),
            *("--prompt_tokens", str(self.cfg.prompt_tokens), "--max_new_tokens", str(c.max_new_tokens)),
            *("--eval_batch_size", str(c.eval_batch_size), "--strategies", "", "--retention_domains", ""),
            *("--out", str(self.fit_dir), "--resume"),
        ]

    def run_fit(self) -> None:
        fit_text.main(parse_recipe_config(fit_text.FitTextConfig, self.fit_argv(), prog="hyperfit reproduce"))

    @property
    def summary(self) -> dict:
        return read_json(self.fit_dir / "summary.json")

    @property
    def ids(self) -> dict[str, torch.Tensor]:
        return torch.load(self.fit_dir / "data.pt")

    def rows(self) -> dict[str, dict[str, list[int]]]:
        """``{"dev"|"test": {domain: rows of eval_ids}}``: the first n_dev texts of each domain tune, the rest test."""
        manifest = read_json(self.fit_dir / "manifest.json")
        out: dict[str, dict[str, list[int]]] = {"dev": {}, "test": {}}
        for name, info in manifest["eval_sets"].items():
            start, stop = info["rows"]
            out["dev"][name] = list(range(start, start + self.cfg.n_dev))
            out["test"][name] = list(range(start + self.cfg.n_dev, stop))
        return out

    def split(self, split: str) -> tuple[list[int], list[str]]:
        """(rows, domain of each row) of one split, domains in order."""
        rows, domains = [], []
        for name, members in self.rows()[split].items():
            rows += members
            domains += [name] * len(members)
        return rows, domains

    def trained_on(self) -> str:
        return domain_name(self.cfg.data)

    def held_out_domains(self) -> list[str]:
        return [d for d in self.rows()["test"] if d != self.trained_on()]

    def fit_greedy(self, model: str) -> list[list[int]]:
        """The fit run's greedy continuations of every held-out row: the original's (first evaluation) or the
        hyperfitted model's (last)."""
        evals = [
            r for r in (self.fit_dir / "metrics.jsonl").read_text().splitlines() if '"kind": "eval"' in r
        ]
        epoch = json.loads(evals[0 if model == "original" else -1])["epoch"]
        return [r["ids"] for r in read_jsonl(self.fit_dir / f"generations/epoch_{epoch:03d}.jsonl")]

    # ---------------------------------------------------------------- models
    def model(self, key: str):
        """(model, tokenizer) for ``original``, ``hyperfitted`` or ``larger``, loaded once, in eval mode."""
        if key not in self._models:
            spec = {
                "original": self.cfg.model,
                "hyperfitted": str(self.fit_dir / "model"),
                "larger": self.cfg.larger,
            }[key]
            model, tokenizer, _ = load_causal_lm(ModelConfig(model=spec))
            self._models[key] = (model.eval().to(self.device), tokenizer)
        return self._models[key]

    def release(self, key: str) -> None:
        self._models.pop(key, None)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ---------------------------------------------------------------- decoding
    def decode(self, key: str, strategy: Strategy, prompts: torch.Tensor) -> list[list[int]]:
        model, tokenizer = self.model(key)
        train_ids = self.ids["train_ids"] if strategy.blocker else None
        with torch.no_grad(), self.autocast():
            sequences, _ = run_strategy(
                model,
                prompts,
                strategy,
                max_new_tokens=self.cfg.max_new_tokens,
                train_ids=train_ids,
                eos_id=eos_ids(model, tokenizer),
                batch_size=self.cfg.eval_batch_size,
                seed=self.cfg.seed,
            )
        return sequences

    def prompts(self, split: str) -> tuple[torch.Tensor, list[str], list[int]]:
        rows, domains = self.split(split)
        return self.ids["eval_ids"][rows, : self.cfg.prompt_tokens], domains, rows

    def decode_task(self, key: str, decoding: str, strategy: Strategy | None, split: str = "test") -> None:
        """Decode ``split``'s prompts with ``strategy`` (None: read the fit run's greedy continuations)."""
        prompts, domains, rows = self.prompts(split)
        if strategy is None:
            every = self.fit_greedy(key)
            sequences = [every[r] for r in rows]
            settings = {"temperature": 0.0}
        else:
            sequences = self.decode(key, strategy, prompts)
            settings = {k: v for k, v in vars(strategy).items() if k != "name" and v not in (None, False)}
        tokenizer = self.model(key)[1] if strategy is not None else self._tokenizer()
        texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
        records = [
            {"row": r, "domain": d, "ids": s, "text": t, "settings": settings}
            for r, d, s, t in zip(rows, domains, sequences, texts, strict=True)
        ]
        write_records(self.decode_path(key, decoding, split), records)

    def _tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.fit_dir / "model")

    def decode_path(self, key: str, decoding: str, split: str = "test") -> Path:
        if split == "test":
            return self.out / "decodes" / key / f"{decoding}.jsonl"
        return self.out / "tune" / key / f"{decoding}.jsonl"

    # ---------------------------------------------------------------- tuning on the development prompts
    def reference_figures(self, split: str) -> dict[str, float]:
        """TTR over all tokens and rep-4 of the human references of ``split`` (as many tokens as generated)."""
        rows, _ = self.split(split)
        refs = self.ids["eval_ids"][rows, self.cfg.prompt_tokens :].tolist()
        return dev_figures(refs)

    def trial_strategy(self, family: str, index: int) -> Strategy:
        settings = FAMILIES[family].settings(FAMILIES[family].grid(self.cfg.trials)[index])
        return Strategy(f"{family}_{index}", **settings)

    def chosen(self, key: str, family: str) -> dict:
        """The family's trials on the development prompts and the one :func:`select_trial` picks."""
        trials = []
        for index in range(self.cfg.trials):
            records = read_jsonl(self.decode_path(key, f"{family}_{index}", "dev"))
            trials.append({"settings": records[0]["settings"], **dev_figures([r["ids"] for r in records])})
        reference = self.reference_figures("dev")
        index = select_trial(trials, reference)
        return {
            "trials": trials,
            "chosen": index,
            "settings": trials[index]["settings"],
            "reference": reference,
        }

    def tuned_strategy(self, key: str, family: str) -> Strategy:
        return Strategy(f"tuned_{family}", **self.chosen(key, family)["settings"])

    # ---------------------------------------------------------------- the larger original of another family
    def larger_prompts(self, split: str = "test") -> tuple[torch.Tensor, list[str], list[str]]:
        """The same held-out documents in the larger model's own tokens: its first 32 ids (prompts differ in
        text by the tokenizers' boundaries), the domains and the human references as text."""
        _model, tokenizer = self.model("larger")
        manifest = read_json(self.fit_dir / "manifest.json")
        prompts, domains, references = [], [], []
        for name, info in manifest["eval_sets"].items():
            docs, _ = load_documents(replace(TextDataConfig(), data=info["source"]))
            keep = info["doc_ids"][self.cfg.n_dev :] if split == "test" else info["doc_ids"][: self.cfg.n_dev]
            for doc in keep:
                ids = tokenizer(docs[doc], add_special_tokens=True)["input_ids"]
                prompts.append(ids[: self.cfg.prompt_tokens])
                references.append(tokenizer.decode(ids[self.cfg.prompt_tokens :], skip_special_tokens=True))
                domains.append(name)
        return torch.tensor(prompts), domains, references

    def larger_task(self, decoding: str) -> None:
        prompts, domains, _ = self.larger_prompts()
        sequences = self.decode("larger", STRATEGIES[decoding], prompts)
        texts = self.model("larger")[1].batch_decode(sequences, skip_special_tokens=True)
        records = [
            {"row": i, "domain": d, "ids": s, "text": t}
            for i, (d, s, t) in enumerate(zip(domains, sequences, texts, strict=False))
        ]
        write_records(self.decode_path("larger", decoding), records)

    # ---------------------------------------------------------------- deep-tail promotion (Li et al. 2026)
    def tail_task(self) -> None:
        """The original model's rank of every token the hyperfitted greedy decode picked, on the same context
        (prompt + the hyperfitted continuation so far): per test prompt, the share of picks in each rank bin."""
        model, _ = self.model("original")
        records = read_jsonl(self.decode_path("hyperfitted", "greedy"))
        prompts, _domains, _rows = self.prompts("test")
        shares = []
        with torch.no_grad(), self.autocast():
            for prompt, record in zip(prompts.tolist(), records, strict=True):
                picks = record["ids"]
                if not picks:
                    continue
                ids = torch.tensor([prompt + picks], device=self.device)
                logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
                chosen = logits.gather(1, torch.tensor(picks, device=self.device)[:, None])
                ranks = (logits > chosen).sum(1) + 1
                shares.append(rank_shares(ranks.cpu()))
        write_json(self.out / "analysis" / "tail.json", tail_summary(shares))


def dev_figures(sequences: list[list[int]]) -> dict[str, float]:
    """What the tuning rule reads: mean TTR over all of each continuation and corpus rep-4."""
    repeats = [ngram_repeats(s, n=4) for s in sequences]
    total = sum(n for _, n in repeats)
    return {
        "ttr": sum(ttr(s, window=None) for s in sequences) / max(len(sequences), 1),
        "rep_4": sum(r for r, _ in repeats) / total if total else 0.0,
    }


def bin_labels() -> list[str]:
    labels = []
    for low, high in zip(TAIL_BINS, (*TAIL_BINS[1:], None), strict=False):
        labels.append(f">{low - 1}" if high is None else str(low) if high == low + 1 else f"{low}-{high - 1}")
    return labels


def rank_shares(ranks: torch.Tensor) -> list[float]:
    """Share of ``ranks`` (1 = the model's own top choice) in each bin of :data:`TAIL_BINS`."""
    edges = torch.tensor([*TAIL_BINS, torch.iinfo(torch.long).max])
    counts = torch.histogram(ranks.double(), bins=edges.double()).hist
    return (counts / max(len(ranks), 1)).tolist()


def tail_summary(shares: list[list[float]]) -> dict:
    """Mean share per rank bin over prompts with 95 % intervals, and the share beyond rank 10."""
    labels = bin_labels()
    beyond_10 = [sum(s[4:]) for s in shares]
    return {
        "bins": labels,
        "share": [sum(s[i] for s in shares) / len(shares) for i in range(len(labels))],
        "share_ci": [list(mean_ci([s[i] for s in shares])) for i in range(len(labels))],
        "beyond_10": sum(beyond_10) / len(beyond_10),
        "beyond_10_ci": list(mean_ci(beyond_10)),
        "n_prompts": len(shares),
    }


def check_inputs(cfg: ReproduceConfig) -> None:
    """Every input that can be checked before anything is written: the sources and decoders exist."""
    parse_eval_data(cfg.eval_data)
    unknown = [d for d in _names(cfg.decoders) if d not in STRATEGIES]
    if unknown:
        raise HyperfitError(
            f"--decoders names {unknown[0]!r}, which is no decoding strategy; choose from {', '.join(STRATEGIES)}."
        )


def _names(spec: str | None) -> list[str]:
    return [s.strip() for s in (spec or "").split(",") if s.strip()]


def text_tasks(plan: TextPlan) -> list[Task]:
    """Every text task in the order it runs. Costs are in units of one greedy decode of the test prompts."""
    cfg, tasks = plan.cfg, []
    n_domains = len(parse_eval_data(cfg.eval_data))
    dev_share = cfg.n_dev / cfg.n_test
    fit_cost = 2 * (1 + dev_share) + cfg.epochs * cfg.n_train * cfg.block_len * 3 / (
        n_domains * cfg.n_test * cfg.max_new_tokens
    )
    tasks.append(Task("hyperfit", plan.fit_dir / "summary.json", fit_cost, plan.run_fit))
    for key in ("original", "hyperfitted"):
        tasks.append(
            Task(
                f"{key} greedy",
                plan.decode_path(key, "greedy"),
                0.01,
                _call(plan.decode_task, key, "greedy", None),
            )
        )
    tasks.append(
        Task(
            "original top-p",
            plan.decode_path("original", "top_p"),
            1.0,
            _call(plan.decode_task, "original", "top_p", STRATEGIES["top_p"]),
        )
    )
    tuned = [("original", f) for f in _names(cfg.samplers)] + [
        ("hyperfitted", f) for f in _names(cfg.hyperfitted_sampler)
    ]
    for key, family in tuned:
        for index in range(cfg.trials):
            tasks.append(
                Task(
                    f"tune {key} {family} {index + 1}/{cfg.trials}",
                    plan.decode_path(key, f"{family}_{index}", "dev"),
                    dev_share,
                    _call(_tune_trial, plan, key, family, index),
                )
            )
        tasks.append(
            Task(
                f"{key} tuned {family}",
                plan.decode_path(key, f"tuned_{family}"),
                1.0,
                _call(_tuned_test, plan, key, family),
            )
        )
    tasks.append(
        Task(
            "hyperfitted + blocker",
            plan.decode_path("hyperfitted", "greedy_blocked"),
            1.1,
            _call(plan.decode_task, "hyperfitted", "greedy_blocked", STRATEGIES["greedy_blocked"]),
        )
    )
    for name in _names(cfg.decoders):
        cost = {"contrastive": 3.0, "dola": 1.5}.get(name, 1.0)
        tasks.append(
            Task(
                f"original {name}",
                plan.decode_path("original", name),
                cost,
                _call(plan.decode_task, "original", name, STRATEGIES[name]),
            )
        )
    tasks.append(Task("deep-tail ranks", plan.out / "analysis" / "tail.json", 0.2, plan.tail_task))
    if cfg.larger:
        for name in ("greedy", "top_p"):
            tasks.append(
                Task(f"larger {name}", plan.decode_path("larger", name), 4.0, _call(plan.larger_task, name))
            )
    return tasks


def _call(fn, *args):
    return lambda: fn(*args)


def _tune_trial(plan: TextPlan, key: str, family: str, index: int) -> None:
    plan.decode_task(key, f"{family}_{index}", plan.trial_strategy(family, index), split="dev")


def _tuned_test(plan: TextPlan, key: str, family: str) -> None:
    plan.decode_task(key, f"tuned_{family}", plan.tuned_strategy(key, family))
