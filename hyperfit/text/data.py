"""Text corpora → N fixed-length training blocks of L tokens and disjoint held-out prompts (paper §1–2).

Sources: gensim's bundled Lee news corpus, shortened English Wikipedia dump and 200 Usenet posts (``newsgroups``:
alt.atheism and sci.space, the 20 Newsgroups sample gensim's tests ship; headers, quoted lines and signatures
removed), all offline; local ``.txt`` (one
document per non-empty line) or ``.jsonl`` (one ``{"text": ...}`` per line) files, and any Hugging Face dataset
(``hf:NAME[:CONFIG[:SPLIT]]``, needs ``datasets`` and network). Documents are shuffled with a seed; the first
N long enough become training blocks (their first L tokens), the next M the held-out texts.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import io
import json
import pickle
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyperfit.common.runs import HyperfitError, sha256_ids

BUNDLED = ("lee", "wiki", "newsgroups")


@dataclass
class TextDataConfig:
    """Which corpus, and how many blocks of which length, for hyperfitting and for evaluation."""

    data: str = field(
        default="lee",
        metadata={
            "help": "lee | wiki | newsgroups (offline, bundled with gensim) | path.txt | path.jsonl | hf:NAME[:CONFIG[:SPLIT]]"
        },
    )
    text_field: str = field(
        default="text", metadata={"help": "Field holding the text in .jsonl / hub datasets."}
    )
    n_train: int = field(default=2000, metadata={"help": "Training blocks (paper: 2,000)."})
    block_len: int = field(default=256, metadata={"help": "Tokens per training block (paper: 256)."})
    n_eval: int = field(default=300, metadata={"help": "Held-out texts: prompts + references (paper: 300)."})
    eval_len: int | None = field(
        default=None, metadata={"help": "Tokens per held-out block; unset = block_len."}
    )
    data_seed: int = field(default=0, metadata={"help": "Seed of the document selection."})
    retention_domains: str = field(
        default="lee,wiki",
        metadata={
            "help": "Bundled corpora whose held-out perplexity every fit-text summary reports before and after "
            "(retention; comma list of lee, wiki, newsgroups; '' = only the run's own held-out blocks)."
        },
    )
    eval_data: str = field(
        default="",
        metadata={
            "help": "Held-out texts from these sources instead (comma list of lee, wiki, newsgroups, FILE.txt/.jsonl, hf:NAME): "
            "--n_eval texts from each, none overlapping the training documents; every figure is reported per "
            "source and averaged (the paper: news, Wikipedia, fiction, 100 each). Unset = --data's own held-out."
        },
    )

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_eval < 1 or self.block_len < 2:
            raise HyperfitError("n_train and n_eval must be ≥ 1 and block_len ≥ 2; fix the data flags.")
        unknown = [d for d in self.retention_domain_names() if d not in BUNDLED]
        if unknown:
            raise HyperfitError(
                f"--retention_domains {unknown[0]!r} is not a bundled corpus; use {', '.join(BUNDLED)} or ''."
            )

    def retention_domain_names(self) -> list[str]:
        return [d.strip() for d in self.retention_domains.split(",") if d.strip()]


@dataclass
class TextSplits:
    """Token blocks ready for training and evaluation, plus the manifest that identifies them."""

    train_ids: torch.Tensor  # LongTensor[n_train, block_len]
    eval_ids: torch.Tensor  # LongTensor[n_eval, eval_len]; prompts are eval_ids[:, :prompt_tokens]
    manifest: dict


def _clean_wiki(markup: str) -> str:
    """Plain article text from MediaWiki markup: gensim's filter, then headings, quotes and captions removed."""
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(markup)
    text = text.replace("'''", "").replace("''", "")
    text = re.sub(r"\(\s*[;,\s]*\)", "", text)  # parentheses emptied by the filter, e.g. "(; , )"
    lines = []
    for line in text.splitlines():
        line = re.sub(r"\s+", " ", line).strip()
        if re.fullmatch(r"=+.*=+", line) or len(line.split()) < 8:  # headings, captions, list stubs
            continue
        lines.append(line)
    return "\n".join(lines)


class _NewsgroupsUnpickler(pickle.Unpickler):
    """Reads gensim's 20 Newsgroups sample (a pickled scikit-learn ``Bunch`` of an old release, with numpy
    arrays) without importing or trusting anything else: only these names may be built."""

    class Bunch(dict):
        pass

    def find_class(self, module: str, name: str):
        import numpy as np

        allowed = {
            ("sklearn.datasets.base", "Bunch"): self.Bunch,
            ("copy_reg", "_reconstructor"): lambda cls, base, state: cls(state),
            ("__builtin__", "dict"): dict,
            ("__builtin__", "object"): object,
            ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct(),
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"unexpected {module}.{name} in the newsgroups sample")
        return allowed[(module, name)]


def _np_reconstruct():
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


def _read_newsgroups_pickle(raw: bytes) -> list[str]:
    data = _NewsgroupsUnpickler(io.BytesIO(zlib.decompress(raw)), encoding="latin1").load()
    return [str(post) for post in data["data"]]


def _clean_post(post: str) -> str:
    """The author's own prose of a Usenet post: no header block, quoted lines, attributions or signature;
    paragraphs joined into single-spaced lines."""
    _header, _sep, body = post.partition("\n\n")
    kept: list[str] = []
    for line in body.splitlines():
        stripped = line.strip()
        if stripped in ("--", "-- "):
            break  # the signature follows
        if stripped.startswith((">", "|", ":")) or re.search(r"\b(writes|wrote):\s*$", stripped):
            continue
        kept.append(stripped)
    paragraphs = [" ".join(p.split()) for p in "\n".join(kept).split("\n\n")]
    return "\n".join(p for p in paragraphs if len(p.split()) >= 8)


def check_source(cfg: TextDataConfig) -> None:
    """Fail fast, before a model is loaded, when the data source cannot exist."""
    if cfg.data in BUNDLED or cfg.data.startswith("hf:"):
        return
    if not Path(cfg.data).is_file():
        raise HyperfitError(
            f"data file {cfg.data} does not exist; pass --data lee, wiki, newsgroups, a .txt/.jsonl file or hf:DATASET_NAME."
        )
    # A local file is read once here, so a bad encoding or record stops the run before any model loads.
    load_documents(cfg)


def load_documents(cfg: TextDataConfig) -> tuple[list[str], str]:
    """All documents of the source, in source order, and a short description of where they came from."""
    source = cfg.data
    if source in BUNDLED:
        docs, origin = _bundled_documents(source)
        return list(docs), origin
    return _hub_or_file_documents(cfg)


@functools.cache
def _bundled_documents(source: str) -> tuple[tuple[str, ...], str]:
    """A bundled corpus, read once per process (cleaning the Wikipedia dump takes tens of seconds)."""
    try:
        from gensim.test.utils import datapath
    except ImportError as err:
        raise HyperfitError(
            f"the bundled corpus {source!r} needs gensim; run `pip install gensim` (or `make demo`)."
        ) from err
    if source == "lee":
        path = datapath("lee_background.cor")
        return tuple(line.strip() for line in open(path, encoding="utf-8") if line.strip()), f"gensim:{path}"
    if source == "newsgroups":
        path = datapath("mini_newsgroup")
        posts = _read_newsgroups_pickle(Path(path).read_bytes())
        return tuple(t for t in (_clean_post(p) for p in posts) if t), f"gensim:{path}"
    from gensim.corpora.wikicorpus import extract_pages

    path = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    docs = []
    for _title, markup, _pageid in extract_pages(bz2.BZ2File(path), filter_namespaces=("0",)):
        if markup.lstrip().upper().startswith("#REDIRECT"):
            continue
        docs.append(_clean_wiki(markup))
    return tuple(d for d in docs if d), f"gensim:{path}"


def _hub_or_file_documents(cfg: TextDataConfig) -> tuple[list[str], str]:
    source = cfg.data
    if source.startswith("hf:"):
        parts = source[3:].split(":")
        name, config, split = (
            parts[0],
            (parts[1] if len(parts) > 1 and parts[1] else None),
            (parts[2] if len(parts) > 2 else "train"),
        )
        try:
            import datasets
        except ImportError as err:
            raise HyperfitError(
                f"{source} needs the datasets package; run `pip install 'hyperfit[hub]'`."
            ) from err
        try:
            dataset = datasets.load_dataset(name, config, split=split)
        except Exception as err:
            raise HyperfitError(
                f"the Hugging Face dataset {name!r} (config {config}, split {split}) could not be loaded ({err}); "
                "check the name and your network, or use --data lee / wiki / a local file."
            ) from err
        if cfg.text_field not in dataset.column_names:
            raise HyperfitError(
                f"dataset {name!r} has no field {cfg.text_field!r} (it has {dataset.column_names}); pass --text_field."
            )
        return [t for t in dataset[cfg.text_field] if t and t.strip()], f"hf:{name}:{config}:{split}"
    path = Path(source)
    if not path.is_file():
        raise HyperfitError(
            f"data file {path} does not exist; pass --data lee, wiki, newsgroups, a .txt/.jsonl file or hf:DATASET_NAME."
        )
    text = read_text_file(path)
    if path.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise HyperfitError(
                    f"{path} line {number} is not valid JSON ({err.msg}); fix or remove it."
                ) from err
            if not isinstance(record, dict) or cfg.text_field not in record:
                raise HyperfitError(
                    f"{path} line {number} has no {cfg.text_field!r} field; write one JSON object "
                    f'{{"{cfg.text_field}": ...}} per line or pass --text_field.'
                )
            value = record[cfg.text_field]
            if not isinstance(value, str):
                raise HyperfitError(
                    f"{path} line {number}: {cfg.text_field!r} is a {type(value).__name__}, not a string; write "
                    f"the document's text as one JSON string, or pass --text_field for the field that holds it."
                )
            docs.append(value)
        return docs, f"file:{path.resolve()}"
    return [line.strip() for line in text.splitlines() if line.strip()], f"file:{path.resolve()}"


def read_text_file(path: Path) -> str:
    """The UTF-8 text of a corpus file; one sentence for a binary or otherwise encoded file."""
    raw = path.read_bytes()
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise HyperfitError(
            f"{path} is a binary file (a NUL byte at offset {nul}); pass a UTF-8 text file "
            "to --data (.txt: one document per line, .jsonl: one JSON object per line)."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise HyperfitError(
            f"{path} is not UTF-8 text (byte {raw[err.start]:#04x} on line {line}); convert it, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name}`, and pass the converted file to --data."
        ) from err


def build_text_splits(cfg: TextDataConfig, tokenizer, *, tokenizer_name: str = "") -> TextSplits:
    """Tokenise once and cut the training blocks and held-out blocks (disjoint documents).

    Documents are visited in a seeded random order and tokenised lazily, so a large hub dataset is not
    tokenised whole. A document qualifies when it has at least max(block_len, eval_len) tokens.
    """
    docs, origin = load_documents(cfg)
    if not docs:
        raise HyperfitError(f"the corpus {cfg.data!r} holds no text; point --data at a non-empty corpus.")
    eval_len = cfg.eval_len or cfg.block_len
    need = max(cfg.block_len, eval_len)
    wanted = cfg.n_train + cfg.n_eval
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(cfg.data_seed)).tolist()
    chosen: list[tuple[int, list[int]]] = []
    for index in order:
        ids = tokenizer(docs[index], add_special_tokens=True)["input_ids"]
        if len(ids) >= need:
            chosen.append((index, ids))
            if len(chosen) == wanted:
                break
    if len(chosen) < wanted:
        raise HyperfitError(
            f"the corpus {cfg.data!r} has only {len(chosen)} documents with at least {need} tokens, but "
            f"{cfg.n_train} training + {cfg.n_eval} held-out are needed; lower --n_train/--n_eval/--block_len "
            "or use a larger corpus."
        )
    train = chosen[: cfg.n_train]
    held = chosen[cfg.n_train :]
    train_ids = torch.tensor([ids[: cfg.block_len] for _, ids in train], dtype=torch.long)
    eval_ids = torch.tensor([ids[:eval_len] for _, ids in held], dtype=torch.long)
    manifest = {
        "source": cfg.data,
        "origin": origin,
        "documents_in_source": len(docs),
        "tokenizer": tokenizer_name,
        "tokenizer_vocab_sha256": vocab_fingerprint(tokenizer),
        "data_seed": cfg.data_seed,
        "block_len": cfg.block_len,
        "eval_len": eval_len,
        "train_doc_ids": [i for i, _ in train],
        "eval_doc_ids": [i for i, _ in held],
        "train_ids_sha256": sha256_ids(train_ids),
        "eval_ids_sha256": sha256_ids(eval_ids),
        "selection": "seeded permutation of documents; first n_train with ≥ need tokens train, next n_eval held out; "
        "each block is the document's first tokens",
    }
    return TextSplits(train_ids=train_ids, eval_ids=eval_ids, manifest=manifest)


def vocab_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's token → id table: runs whose ids mean the same tokens share it."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def save_splits(splits: TextSplits, directory: Path) -> None:
    """Write the exact ids (``data.pt``) so a run can be re-checked bit for bit."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".data.pt.tmp"
    torch.save({"train_ids": splits.train_ids, "eval_ids": splits.eval_ids}, tmp)
    tmp.replace(directory / "data.pt")
