"""The paper's evaluation protocol as data: held-out texts from several sources, N from each, never overlapping
the training documents (paper §2: news, Wikipedia and fiction, 100 texts each, every figure averaged over them).

``--eval_data lee,wiki,stories.jsonl,hf:NAME`` names the sources. From a corpus (``lee``, ``wiki``, ``hf:...``)
the texts are drawn in a seeded order, passing over the training documents themselves and any text that shares a
span of ``OVERLAP_SPAN`` tokens with a training block (duplicates inside a corpus); a file is the user's own choice
of texts, so one that overlaps is refused. Each held-out text is cut to the same ``eval_len`` tokens.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from hyperfit.common.runs import HyperfitError, sha256_ids
from hyperfit.text.data import BUNDLED, TextDataConfig, load_documents

OVERLAP_SPAN = 32  # tokens in common with a training block that make a held-out text an overlap


def parse_eval_data(spec: str) -> list[str]:
    """The comma list of ``--eval_data`` as sources, each checked to exist (files) before any model is loaded."""
    sources = [s.strip() for s in spec.split(",") if s.strip()]
    for source in sources:
        if source in BUNDLED or source.startswith("hf:"):
            continue
        if not Path(source).is_file():
            raise HyperfitError(
                f"--eval_data source {source!r} is neither lee, wiki, hf:NAME nor an existing .txt/.jsonl file; "
                "fix the path."
            )
    if len(set(sources)) != len(sources):
        raise HyperfitError(f"--eval_data names a source twice ({spec!r}); list each once.")
    return sources


def domain_name(source: str) -> str:
    """A short name for a source in reports: lee, wiki, the file's stem, or the hub dataset's name."""
    if source.startswith("hf:"):
        return source[3:].split(":")[0].split("/")[-1]
    return Path(source).stem if source not in BUNDLED else source


def _spans(ids: list[int], n: int) -> set[int]:
    return {hash(tuple(ids[i : i + n])) for i in range(len(ids) - n + 1)}


def build_eval_sets(
    sources: list[str],
    data_cfg: TextDataConfig,
    tokenizer,
    *,
    train_ids: torch.Tensor,
    train_doc_ids: list[int],
    n_texts: int,
    eval_len: int,
) -> tuple[dict[str, torch.Tensor], dict]:
    """``({domain: eval_ids[n_texts, eval_len]}, manifest)`` for every source, in the order given.

    Overlap with training is checked on ids: a text overlaps when any ``OVERLAP_SPAN`` consecutive ids of its
    first ``eval_len`` tokens (fewer when the blocks are shorter) also occur in a training block.
    """
    span = min(OVERLAP_SPAN, eval_len, train_ids.size(1))  # short blocks: the whole of the shorter one
    train_spans: set[int] = set()
    for row in train_ids.tolist():
        train_spans |= _spans(row, span)
    sets: dict[str, torch.Tensor] = {}
    manifest: dict[str, dict] = {}
    for source in sources:
        is_file = source not in BUNDLED and not source.startswith("hf:")
        docs, origin = load_documents(replace(data_cfg, data=source))
        if is_file:
            order = list(range(len(docs)))  # the user's texts, in the user's order
        else:
            seed = torch.Generator().manual_seed(data_cfg.data_seed + 1)  # not the training selection's order
            order = torch.randperm(len(docs), generator=seed).tolist()
        excluded = set(train_doc_ids) if source == data_cfg.data else set()
        chosen, ids_chosen, passed_over, too_short = [], [], 0, 0
        for index in order:
            if index in excluded:
                continue
            ids = tokenizer(docs[index], add_special_tokens=True)["input_ids"][:eval_len]
            if len(ids) < eval_len:
                too_short += 1
                continue
            if _spans(ids, span) & train_spans:
                if is_file:
                    raise HyperfitError(
                        f"--eval_data {source} text {index + 1} shares {span} consecutive tokens with the "
                        "training documents; remove it from the file or train on other data."
                    )
                passed_over += 1
                continue
            chosen.append(index)
            ids_chosen.append(ids)
            if len(chosen) == n_texts:
                break
        if len(chosen) < n_texts:
            raise HyperfitError(
                f"--eval_data {source} has only {len(chosen)} texts of at least {eval_len} tokens that do not "
                f"overlap the training documents, but {n_texts} are needed; lower --n_eval or --eval_len."
            )
        name = domain_name(source)
        if name in sets:
            raise HyperfitError(f"--eval_data has two sources named {name!r}; rename one of the files.")
        sets[name] = torch.tensor(ids_chosen, dtype=torch.long)
        manifest[name] = {
            "source": source,
            "origin": origin,
            "doc_ids": chosen,
            "passed_over_overlapping": passed_over,
            "passed_over_too_short": too_short,
            "eval_ids_sha256": sha256_ids(sets[name]),
        }
    return sets, manifest


def with_eval_sets(splits, data_cfg: TextDataConfig, tokenizer):
    """``splits`` whose held-out blocks are ``--eval_data``'s sets, one after another (N rows per domain), and
    whose manifest records each domain's rows and provenance (``eval_sets``), so a resumed run finds them."""
    from hyperfit.text.data import TextSplits

    sets, provenance = build_eval_sets(
        parse_eval_data(data_cfg.eval_data),
        data_cfg,
        tokenizer,
        train_ids=splits.train_ids,
        train_doc_ids=splits.manifest["train_doc_ids"],
        n_texts=data_cfg.n_eval,
        eval_len=splits.eval_ids.size(1),
    )
    start = 0
    for name, ids in sets.items():
        provenance[name]["rows"] = [start, start + ids.size(0)]
        start += ids.size(0)
    eval_ids = torch.cat(list(sets.values()))
    manifest = {**splits.manifest, "eval_sets": provenance, "eval_ids_sha256": sha256_ids(eval_ids)}
    return TextSplits(splits.train_ids, eval_ids, manifest)


def domain_rows(manifest: dict, n_eval: int) -> dict[str, slice]:
    """``{domain: rows of eval_ids}``; a run without ``--eval_data`` has one domain, its own held-out split."""
    if "eval_sets" not in manifest:
        return {"held-out": slice(0, n_eval)}
    return {name: slice(*info["rows"]) for name, info in manifest["eval_sets"].items()}
