"""Shared fixtures: tiny random models built from configs, a byte-level tokenizer, small text files."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from prunekit.measure.config import CheckBudget, ProbeConfig


def pytest_runtest_setup(item):
    """``@pytest.mark.kernel`` tests need the compiled extension: checked when such a test runs, not at
    collection, so collecting (or ``-m "not kernel"``) never builds it."""
    if item.get_closest_marker("kernel"):
        from prunekit.native import extension

        if not extension.available():
            pytest.skip("no C++ compiler: the compiled extension (sparse kernel, memory pool) cannot be built")


def snapshot(root) -> dict:
    """Every path under ``root`` (links as their target, not followed) and every regular file's bytes: what a test
    compares before and after a command to show nothing else changed."""
    import os

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def run_with_teacher(main, common: list[str], teacher, text_files, tmp_path, capsys) -> dict:
    """Run a recovery command (``common``: its arguments without teacher, evaluation or output) on a folder pruned from
    a path: asked for its teacher (a recorded path is never followed), refused on its own evaluation text, then run
    with both; each refusal exits 2 and writes nothing. Returns the manifest of the run that went through."""
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "a")]) == 2
    assert "pass that as --teacher" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*common, "--teacher", str(teacher), "--eval", str(text_files["jsonl"]), "--out",
                 str(tmp_path / "b")]) == 2
    assert "of the evaluation text" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main([*common, "--teacher", str(teacher), "--eval", str(text_files["txt"]), "--eval-seqlen", "32",
                 "--max-windows", "2", "--out", str(tmp_path / "c")]) == 0
    return json.loads((tmp_path / "c" / "manifest.json").read_text())


def byte_tokenizer():
    """A real fast tokenizer with 256 byte tokens: saves and loads like any Hugging Face tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def tiny_llama(seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def tiny_model_dir(tmp_path):
    path = tmp_path / "tiny"
    tiny_llama().save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


TINY_CHECK = CheckBudget(2, 4, ProbeConfig(arithmetic=4, retrieval_lengths=(96,), retrieval_depths=(0.0, 1.0),
                                           retrieval_per_cell=1, code=2, gsm8k=1), ppl_seqlen=64,
                         tasks=("piqa", "arc_easy"))  # the shipping check in seconds, on ``long_tiny_dir``


@pytest.fixture
def long_tiny_dir(tmp_path):
    """A tiny random model with room for GSM8K's 8-shot prompts in byte tokens."""
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192)
    path = tmp_path / "long_tiny"
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def text_files(tmp_path):
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing".split()
    gen = torch.Generator().manual_seed(0)
    docs = [" ".join(words[i] for i in torch.randint(len(words), (n,), generator=gen).tolist())
            for n in (400, 30, 600, 50, 900)]
    txt = tmp_path / "eval.txt"
    txt.write_text("\n\n".join(docs))
    jsonl = tmp_path / "calib.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    return {"txt": txt, "jsonl": jsonl}


COMMON = dict(vocab_size=128, max_position_embeddings=128)
ARCHS = {  # tiny configs of each attention and position style prunekit supports
    "llama-gqa": lambda: transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=2, **COMMON),
    "mistral": lambda: transformers.MistralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=1, sliding_window=16,
                                                  **COMMON),
    "qwen2": lambda: transformers.Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, **COMMON),
    "opt": lambda: transformers.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                                          word_embed_proj_dim=64, **COMMON),
    "gpt2": lambda: transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=128),
}


def tiny_arch(arch: str):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(ARCHS[arch]()).eval()
