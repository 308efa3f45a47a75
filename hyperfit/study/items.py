"""Comparison items from ``fit-text`` and ``eval`` outputs (paper §2.4): each system's continuation of a held-out
context against the human continuation of the same context, both cut to the same number of tokens and shown
as text at whole-word boundaries; optionally system-vs-system pairs, and attention checks with a known answer.

A system is ``MODEL/STRATEGY`` (e.g. ``hyperfitted/greedy``); the human continuation is ``reference``.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from hyperfit.common.analysis import rep_n, repetition_loop
from hyperfit.common.runs import HyperfitError, read_json, read_jsonl
from hyperfit.study import store

REFERENCE = "reference"
SYNTHETIC_LOOP = "check/synthetic-loop"
PAIRS = ("reference", "systems", "both")


@dataclass
class StudyConfig:
    """How a study is built from generation outputs and how it is served."""

    sources: list[str] = field(
        default_factory=list,
        metadata={
            "help": "fit-text or eval output directories (DIR or DOMAIN=DIR; the domain defaults to the data)."
        },
    )
    lengths: list[int] = field(
        default_factory=lambda: [128, 256], metadata={"help": "Tokens shown per side."}
    )
    annotations: int = field(default=3, metadata={"help": "Annotators per comparison (paper: 3)."})
    pairs: str = field(
        default="reference",
        metadata={
            "help": "reference: each system vs the human text (the paper); systems: system vs system; both."
        },
    )
    systems: list[str] = field(
        default_factory=list, metadata={"help": "Only these MODEL/STRATEGY systems (empty = all found)."}
    )
    check_share: float = field(
        default=0.1,
        metadata={"help": "Share of each annotator's items that are attention checks (0 = none)."},
    )
    check_items: int = field(default=12, metadata={"help": "Distinct attention-check items to make."})
    per_annotator: int = field(
        default=0, metadata={"help": "Most items one annotator is given (0 = no cap)."}
    )
    stale_minutes: float = field(
        default=60.0,
        metadata={"help": "An item served but not voted on for this long is offered to someone else too."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the left/right sides, item orders and checks."})
    tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer directory or hub name; unset = the one the source names."}
    )
    instructions: str | None = field(
        default=None, metadata={"help": "A text file of instructions shown before the first item."}
    )

    def __post_init__(self) -> None:
        if self.pairs not in PAIRS:
            raise HyperfitError(f"--pairs {self.pairs!r} is not one of {', '.join(PAIRS)}; pick one of them.")
        if self.annotations < 1:
            raise HyperfitError("--annotations must be at least 1; the paper uses 3.")
        if not 0 <= self.check_share < 1:
            raise HyperfitError(f"--checks {self.check_share} is not a share in [0, 1); e.g. 0.1.")
        if not self.lengths or any(n < 1 for n in self.lengths):
            raise HyperfitError("--lengths must list positive token counts, e.g. 128,256.")


@dataclass
class Source:
    """One output directory read into memory: prompts, human continuations and every system's continuation."""

    path: Path
    kind: str
    domain: str
    contexts: list[str]
    reference_ids: list[list[int]]
    continuations: dict[str, list[list[int]]]
    generated_tokens: int
    tokenizer: object = None


# ------------------------------------------------------------------------------------------------------------
# Reading fit-text and eval directories
# ------------------------------------------------------------------------------------------------------------


def _short_domain(data: str) -> str:
    return data if "/" not in data and "." not in data else Path(data).stem


def _load_tokenizer(spec: str, *, gguf_file: str | None = None, source: Path):
    from transformers import AutoTokenizer

    from hyperfit.text.model import ModelConfig, resolve_model

    name, gguf = resolve_model(ModelConfig(model=spec, gguf_file=gguf_file))
    try:
        return AutoTokenizer.from_pretrained(name, **({"gguf_file": gguf} if gguf else {}))
    except (OSError, ValueError) as err:
        raise HyperfitError(
            f"the tokenizer of {source} ({spec}) could not be loaded ({type(err).__name__}); pass --tokenizer "
            "with the model's directory."
        ) from err


def _run_tokenizer(run: Path, tokenizer: str | None):
    if tokenizer:
        return _load_tokenizer(tokenizer, source=run)
    if (run / "model" / "tokenizer_config.json").exists():
        return _load_tokenizer(str(run / "model"), source=run)
    config = read_json(run / "config.json")
    return _load_tokenizer(config["model"], gguf_file=config.get("gguf_file"), source=run)


def _decoding_files(path: Path, summary: dict) -> dict[str, Path]:
    files = {}
    for model, strategies in summary.get("decoding", {}).items():
        for strategy in strategies:
            file = path / "generations" / "decoding" / f"{model}_{strategy}.jsonl"
            if file.exists():
                files[f"{model}/{strategy}"] = file
    if not files:
        raise HyperfitError(
            f"{path} has no decoded continuations (generations/decoding/*.jsonl); pass a fit-text run made with "
            "--strategies, or a `hyperfit eval` output directory."
        )
    return files


def read_source(path: str | Path, *, domain: str | None = None, tokenizer: str | None = None) -> Source:
    """Read a finished fit-text or eval directory. Reference ids are the run's exact held-out ids where the run
    kept them (``data.pt``), else the reference text re-encoded."""
    import torch

    path = Path(path)
    if not (path / "summary.json").exists():
        raise HyperfitError(
            f"{path} is not a finished fit-text or eval directory (no summary.json); pass such a run's --out."
        )
    summary = read_json(path / "summary.json")
    if summary.get("kind") == "reproduce":
        return _read_reproduction(path, domain=domain, tokenizer=tokenizer)
    config = read_json(path / "config.json") if (path / "config.json").exists() else {}
    files = _decoding_files(path, summary)
    prompt_tokens = int(config.get("prompt_tokens", 32))
    if summary.get("kind") == "eval":
        kind = "eval"
        first_spec = next(iter(summary["models"].values()))
        run_dir = Path(first_spec)
        if tokenizer is None and (run_dir / "model" / "tokenizer_config.json").exists():
            tok = _load_tokenizer(str(run_dir / "model"), source=path)
        else:
            tok = _load_tokenizer(tokenizer or first_spec, source=path)
        records = read_jsonl(next(iter(files.values())))
        contexts = [r["prompt"] for r in records]
        held_out_of = str(summary.get("prompts", ""))
        if held_out_of.startswith("held-out of "):
            origin = Path(held_out_of.removeprefix("held-out of "))
            eval_ids = torch.load(origin / "data.pt")["eval_ids"]
            references = eval_ids[:, prompt_tokens:].tolist()
            data = read_json(origin / "config.json").get("data", origin.name)
        else:
            references = [tok(r["reference"], add_special_tokens=False)["input_ids"] for r in records]
            data = held_out_of or path.name
    else:
        kind = "fit-text"
        tok = _run_tokenizer(path, tokenizer)
        epochs = sorted((path / "generations").glob("epoch_*.jsonl"))
        if not epochs or not (path / "data.pt").exists():
            raise HyperfitError(
                f"{path} has no generations/epoch_*.jsonl or data.pt; pass a complete fit-text run directory."
            )
        contexts = [r["prompt"] for r in read_jsonl(epochs[0])]
        references = torch.load(path / "data.pt")["eval_ids"][:, prompt_tokens:].tolist()
        data = config.get("data", summary.get("data", path.name))
    continuations = {}
    for system, file in files.items():
        records = sorted(read_jsonl(file), key=lambda r: r["index"])
        continuations[system] = [r["ids"] for r in records]
        if len(records) != len(contexts):
            raise HyperfitError(
                f"{file} has {len(records)} continuations for {len(contexts)} prompts; the directory is "
                "incomplete, rerun the command that wrote it."
            )
    generated = int(config.get("max_new_tokens") or summary.get("max_new_tokens") or 0)
    generated = generated or max(len(ids) for seqs in continuations.values() for ids in seqs)
    return Source(
        path=path,
        kind=kind,
        domain=domain or _short_domain(str(data)),
        contexts=contexts,
        reference_ids=references,
        continuations=continuations,
        generated_tokens=generated,
        tokenizer=tok,
    )


def _read_reproduction(path: Path, *, domain: str | None, tokenizer: str | None) -> Source:
    """A `hyperfit reproduce` directory: its test prompts, their human continuations (as long as the generated
    ones) and every test decoding of the hyperfitted model's tokenizer (the larger model of another family is
    left out: its prompts are other ids)."""
    import torch

    config = read_json(path / "config.json")
    prompt_tokens = int(config.get("prompt_tokens", 32))
    tok = _run_tokenizer(path / "fit", tokenizer)
    eval_ids = torch.load(path / "fit" / "data.pt")["eval_ids"]
    files = {
        f"{f.parent.name}/{f.stem}": f
        for f in sorted((path / "decodes").glob("*/*.jsonl"))
        if f.parent.name != "larger"
    }
    if not files:
        raise HyperfitError(f"{path} has no test decodes (decodes/*/*.jsonl); finish it with --resume first.")
    rows = [r["row"] for r in read_jsonl(next(iter(files.values())))]
    continuations = {}
    for system, file in files.items():
        records = read_jsonl(file)
        if [r["row"] for r in records] != rows:
            raise HyperfitError(f"{file} decodes other prompts than its siblings; rerun the reproduction.")
        continuations[system] = [r["ids"] for r in records]
    return Source(
        path=path,
        kind="reproduce",
        domain=domain or "held-out",
        contexts=tok.batch_decode(eval_ids[rows, :prompt_tokens].tolist(), skip_special_tokens=True),
        reference_ids=eval_ids[rows, prompt_tokens:].tolist(),
        continuations=continuations,
        generated_tokens=int(config.get("max_new_tokens") or 0),
        tokenizer=tok,
    )


# ------------------------------------------------------------------------------------------------------------
# Cutting both sides to the same length
# ------------------------------------------------------------------------------------------------------------


def cut_at_words(tokenizer, ids: list[int], length: int) -> str:
    """The text of the first ``length`` ids, ending at a whole word: a word the cut splits (the next id
    continues it with a letter or digit) is dropped, and so is the last word when no next id is known and the
    text does not end in punctuation. A single unfinished word is kept rather than showing nothing."""
    head = ids[:length]
    text = tokenizer.decode(head, skip_special_tokens=True)
    if len(ids) > length:
        longer = tokenizer.decode(ids[: length + 1], skip_special_tokens=True)
        following = longer[len(text) : len(text) + 1] if longer.startswith(text) else " "
        split_word = following.isalnum() and not text[-1:].isspace()
    else:
        split_word = bool(text) and text[-1].isalnum()
    if split_word:
        trimmed = re.sub(r"\S+$", "", text)
        if trimmed.strip():
            text = trimmed
    return text.strip()


def _synthetic_loop(reference_text: str) -> str:
    """A known-bad continuation: the reference's first words repeated to the reference's length in words."""
    words = reference_text.split()
    phrase = words[: max(4, min(12, len(words) // 4))]
    looped = list(itertools.islice(itertools.cycle(phrase), len(words)))
    return " ".join(looped)


# ------------------------------------------------------------------------------------------------------------
# Building the database
# ------------------------------------------------------------------------------------------------------------


def parse_source_arg(arg: str) -> tuple[str | None, str]:
    """``DIR`` or ``DOMAIN=DIR``."""
    domain, sep, path = arg.partition("=")
    return (domain, path) if sep and domain and not Path(arg).exists() else (None, arg)


def build_study(cfg: StudyConfig, out: str | Path, *, overwrite: bool = False) -> dict:
    """Read the sources, cut every text, make the items, and write them into a new database at ``out``.
    Everything is checked before the file is created, so bad input leaves nothing behind."""
    if not cfg.sources:
        raise HyperfitError("no --from given; pass one or more fit-text or eval output directories.")
    sources = []
    for arg in cfg.sources:
        domain, path = parse_source_arg(arg)
        if not Path(path).is_dir():
            raise HyperfitError(
                f"--from {path} is not a directory; pass a fit-text or eval output directory."
            )
        sources.append(read_source(path, domain=domain, tokenizer=cfg.tokenizer))
    found = sorted({s for source in sources for s in source.continuations})
    unknown = sorted(set(cfg.systems) - set(found))
    if unknown:
        raise HyperfitError(
            f"--systems names {', '.join(unknown)}, which the sources do not have; choose from {', '.join(found)}."
        )
    for source in sources:
        longest = max(len(ids) for seqs in source.continuations.values() for ids in seqs)
        for length in cfg.lengths:
            if length > max(source.generated_tokens, longest):
                raise HyperfitError(
                    f"--lengths {length} is longer than the {max(source.generated_tokens, longest)} tokens "
                    f"generated in {source.path}; pass lengths up to that, or generate longer continuations "
                    "(--max_new_tokens)."
                )
            if all(len(ids) < length for ids in source.reference_ids):
                raise HyperfitError(
                    f"--lengths {length} is longer than every human continuation in {source.path} "
                    f"(at most {max(len(ids) for ids in source.reference_ids)} tokens); pass shorter lengths or "
                    "use longer held-out texts (--eval_len)."
                )
    rng = random.Random(cfg.seed)
    prompts, texts, items, skipped = [], [], [], 0
    for source in sources:
        systems = [s for s in sorted(source.continuations) if not cfg.systems or s in cfg.systems]
        for index, context in enumerate(source.contexts):
            prompt = len(prompts)
            prompts.append((str(source.path), index, source.domain, context.strip()))
            for length in cfg.lengths:
                reference_ids = source.reference_ids[index]
                if len(reference_ids) < length:
                    skipped += 1
                    continue
                reference = (prompt, REFERENCE, length, cut_at_words(source.tokenizer, reference_ids, length))
                texts.append((*reference, reference_ids[:length]))
                ref_text = len(texts) - 1
                system_texts = {}
                for system in systems:
                    ids = source.continuations[system][index]
                    texts.append(
                        (prompt, system, length, cut_at_words(source.tokenizer, ids, length), ids[:length])
                    )
                    system_texts[system] = len(texts) - 1
                if cfg.pairs in ("reference", "both"):
                    items += [(prompt, length, "reference", t, ref_text, None) for t in system_texts.values()]
                if cfg.pairs in ("systems", "both"):
                    for a, b in itertools.combinations(systems, 2):
                        items.append((prompt, length, "systems", system_texts[a], system_texts[b], None))
    if not items:
        raise HyperfitError(
            "no comparisons could be made (every human continuation is shorter than --lengths); pass shorter "
            "lengths."
        )
    checks = _attention_checks(cfg, texts, rng)
    for text_index, ref_index in checks["real"]:
        items.append((texts[text_index][0], texts[text_index][2], "check", text_index, ref_index, "b"))
    for ref_index in checks["synthetic"]:
        prompt, _, length, ref_text, ref_ids = texts[ref_index]
        texts.append((prompt, SYNTHETIC_LOOP, length, _synthetic_loop(ref_text), []))
        items.append((prompt, length, "check", len(texts) - 1, ref_index, "b"))

    conn = store.create(out, overwrite=overwrite)
    with store.write(conn):
        conn.executemany(
            "INSERT INTO prompts (id, source, prompt_index, domain, context) VALUES (?, ?, ?, ?, ?)",
            [(i + 1, *p) for i, p in enumerate(prompts)],
        )
        conn.executemany(
            "INSERT INTO texts (id, prompt_id, system, length, text, ids) VALUES (?, ?, ?, ?, ?, ?)",
            [(i + 1, p + 1, s, n, t, json.dumps(ids)) for i, (p, s, n, t, ids) in enumerate(texts)],
        )
        conn.executemany(
            "INSERT INTO items (id, prompt_id, length, kind, text_a, text_b, expected) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(i + 1, p + 1, n, k, a + 1, b + 1, e) for i, (p, n, k, a, b, e) in enumerate(items)],
        )
        settings = {
            "seed": cfg.seed,
            "annotations": cfg.annotations,
            "check_share": cfg.check_share if checks["real"] or checks["synthetic"] else 0.0,
            "per_annotator": cfg.per_annotator,
            "stale_minutes": cfg.stale_minutes,
            "lengths": cfg.lengths,
            "pairs": cfg.pairs,
            "systems": sorted({t[1] for t in texts} - {REFERENCE, SYNTHETIC_LOOP}),
            "sources": [
                {"path": str(s.path), "kind": s.kind, "domain": s.domain, "prompts": len(s.contexts)}
                for s in sources
            ],
            "instructions": Path(cfg.instructions).read_text(encoding="utf-8") if cfg.instructions else None,
            "created_at": time.time(),
        }
        for key, value in settings.items():
            store.set_setting(conn, key, value)
    made = store.counts(conn)
    conn.close()
    return {**made, "skipped_prompt_lengths": skipped, "real_checks": len(checks["real"])}


def _attention_checks(cfg: StudyConfig, texts: list[tuple], rng: random.Random) -> dict[str, list]:
    """Attention checks: real continuations that end in a repetition loop (most repetitive first) against the
    human text of the same context; when too few loop, the reference's own opening phrase repeated."""
    if cfg.check_share == 0 or cfg.check_items == 0:
        return {"real": [], "synthetic": []}
    references = {(t[0], t[2]): i for i, t in enumerate(texts) if t[1] == REFERENCE}
    looping = [
        (rep_n([t[4]], n=4), i)
        for i, t in enumerate(texts)
        if t[1] != REFERENCE and len(t[4]) >= 8 and repetition_loop(t[4]) and rep_n([t[4]], n=4) >= 0.3
    ]
    rng.shuffle(looping)
    looping.sort(key=lambda pair: -pair[0])
    real = [(i, references[(texts[i][0], texts[i][2])]) for _, i in looping[: cfg.check_items]]
    used = {ref for _, ref in real}
    spare = [i for i in references.values() if i not in used]
    rng.shuffle(spare)
    synthetic = spare[: cfg.check_items - len(real)]
    return {"real": real, "synthetic": synthetic}
