"""The checks of scripts/check_llamacpp.sh, run against llama.cpp binaries built from source.

1. Block outputs (``llama-eval-callback``) on the embedded SmolLM2 GGUF: with a control vector
   exported by ``reptune export-gguf`` at scale c, block N's output moves by exactly
   ``c * direction.N`` at every position and block N-1's does not move; a 3-layer file loads and
   shifts its first layer the same way.
2. Steered text (``llama-completion``, greedy): sentiment vectors at layer N move the text's
   sentiment the same way in llama.cpp as ``SteeredModel`` does in transformers.
3. Merged model: a LoRA tuned for a few steps, merged with ``export_merged``, converted with the
   sdist's ``convert_hf_to_gguf.py`` (f32); llama.cpp's greedy text is compared with
   transformers'.

Prints progress on stderr and a JSON summary as the last line of stdout.

    python scripts/llamacpp_checks.py --bin BUILD/bin --src LLAMA_CPP_SRC --work WORK_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from reptune import SteeredModel, extract_vectors, load_model
from reptune.behaviours import load_eval_prompts, load_sentiment_pairs, sentiment_score
from reptune.models import embedded_model_file
from reptune.publish.gguf_export import export_control_vector
from reptune.publish.merged import export_merged

MODEL = "embedded:smollm2-135m"
# Short enough that llama-eval-callback prints every position (it elides rows past 6).
PROBE = "The weather today is"
PRINT_TOLERANCE = 1.5e-4  # eval-callback prints 4 decimals: each value is within 5e-5


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: int = 300) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout + done.stderr


# -- 1. block outputs ------------------------------------------------------------------------
_ROW = re.compile(r"^\s*\[\s*(-?[\d.]+.*?)\s*\],?\s*$")


def block_outputs(text: str) -> dict[str, dict]:
    """``{tensor name: {"rows": [[printed values]], "sum": float}}`` for every ``l_out-N``."""
    out, name = {}, None
    for line in text.splitlines():
        head = re.search(r"\s(l_out-\d+) = \(f32\)", line)
        if head:
            name = head.group(1)
            out[name] = {"rows": [], "sum": None}
            continue
        if name is None:
            continue
        row = _ROW.match(line)
        if row:
            values = [v.strip() for v in row.group(1).split(",")]
            out[name]["rows"].append([float(v) for v in values if v and v != "..."])
        elif line.strip().startswith("sum = "):
            out[name]["sum"] = float(line.split("=")[1])
            name = None
    return out


def eval_callback(binary: Path, gguf: Path, control: str | None, threads: int) -> dict:
    cmd = [str(binary), "-m", str(gguf), "-p", PROBE, "-t", str(threads), "-c", "64"]
    if control:
        cmd += ["--control-vector-scaled", control]
    return block_outputs(run(cmd))


def printed_part(vec: torch.Tensor, n: int = 3) -> list[float]:
    # eval-callback prints the first and last n values of each row.
    return vec[:n].tolist() + vec[-n:].tolist()


def check_shift(base: dict, steered: dict, layer: int, delta: torch.Tensor) -> dict:
    """Block ``layer`` moved by ``delta`` at every printed position, block ``layer-1`` did not."""
    now, before = steered[f"l_out-{layer}"], base[f"l_out-{layer}"]
    expected = printed_part(delta)
    errors = [
        abs((s - b) - e)
        for row_s, row_b in zip(now["rows"], before["rows"])
        for s, b, e in zip(row_s, row_b, expected)
    ]
    positions = len(now["rows"])
    sum_shift = now["sum"] - before["sum"]
    expected_sum = positions * float(delta.sum())
    previous = f"l_out-{layer - 1}"
    unchanged = steered[previous] == base[previous]
    sum_ok = abs(sum_shift - expected_sum) <= 1e-3 * abs(expected_sum) + 0.05
    return {
        "layer": layer,
        "positions": positions,
        "max_abs_error": max(errors),
        "sum_shift": sum_shift,
        "expected_sum_shift": expected_sum,
        "previous_block_unchanged": unchanged,
        "pass": max(errors) <= PRINT_TOLERANCE and sum_ok and unchanged and positions > 1,
    }


# -- 2. steered text ---------------------------------------------------------------------------
def completion(binary: Path, gguf: Path, prompt: str, tokens: int, threads: int, control=None):
    """Greedy continuation of ``prompt`` and the prompt's token ids, as llama.cpp saw them."""
    cmd = [str(binary), "-m", str(gguf), "-p", prompt, "-n", str(tokens), "--temp", "0",
           "--top-k", "1", "-s", "0", "-t", str(threads), "-c", "512", "-no-cnv",
           "--no-display-prompt", "--verbose-prompt", "--simple-io", "--no-warmup"]  # fmt: skip
    if control:
        cmd += ["--control-vector-scaled", control]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise RuntimeError(f"llama-completion failed: {done.stderr[-3000:]}")
    # --verbose-prompt lists the prompt's tokens as "<time> I <id> -> '<piece>'".
    ids = [int(m) for m in re.findall(r"^(?:[\d.]+ I)?\s+(\d+) -> '", done.stderr, flags=re.M)]
    return done.stdout.replace("[end of text]", "").strip(), ids


def hf_greedy(model, tok, ids: list[int], tokens: int, steer=None) -> str:
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=int)}
    generator = steer if steer is not None else model
    with torch.no_grad():
        out = generator.generate(**batch, max_new_tokens=tokens, do_sample=False)
    return tok.decode(out[0, len(ids) :], skip_special_tokens=True).strip()


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# -- 3. merged model ---------------------------------------------------------------------------
def tune_and_merge(work: Path, vectors, layer: int) -> Path:
    from peft import LoraConfig, get_peft_model

    from reptune.behaviours import load_sentiment_rows
    from reptune.training import RepTuneConfig, RepTuneTrainer

    model, tok = load_model(MODEL)
    rows = [
        {"prompt": r["prompt"], "completion": r["positive"]} for r in load_sentiment_rows("train")
    ]
    model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    args = RepTuneConfig(
        output_dir=str(work / "tuned"), use_cpu=True, report_to=[], save_strategy="no",
        max_steps=4, per_device_train_batch_size=4, learning_rate=2e-3, logging_steps=3,
        rep_layers=[layer], rep_positions="all", lm_weight=0.1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = RepTuneTrainer(model, args, vectors=vectors.select([layer]), train_dataset=rows,
                             processing_class=tok)  # fmt: skip
    trainer.train()
    trainer.save_model(str(work / "tuned"))
    return export_merged(work / "tuned", work / "merged", base_model=MODEL)


def convert(src: Path, merged: Path, out: Path, pydeps: Path) -> tuple[bool, str]:
    pydeps.mkdir(parents=True, exist_ok=True)
    # The converter imports sentencepiece even for BPE vocabularies; keep it out of the venv.
    if not any(pydeps.glob("sentencepiece*")):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(pydeps),
                        "sentencepiece>=0.1.98,<0.3.0"], check=True)  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(pydeps))
    cmd = [sys.executable, str(src / "convert_hf_to_gguf.py"), str(merged), "--outfile", str(out),
           "--outtype", "f32"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    return done.returncode == 0 and out.is_file(), done.stderr[-1500:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, required=True)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--layer", type=int, default=10)
    parser.add_argument("--coefficient", type=float, default=0.24)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    layer, c = args.layer, args.coefficient
    gguf = embedded_model_file(MODEL.split(":", 1)[1])
    summary: dict = {"llama_cpp": args.src.parent.name, "model": gguf.name}

    log("extracting sentiment vectors")
    model, tok = load_model(MODEL)
    pairs = load_sentiment_pairs(tok, split="train")[: args.pairs]
    vectors = extract_vectors(model, tok, pairs, [layer - 2, layer - 1, layer], progress=False)

    log("1. block outputs")
    one = export_control_vector(vectors, args.work / "cv1.gguf", layers=[layer])
    three = export_control_vector(vectors, args.work / "cv3.gguf")
    evalcb = args.bin / "llama-eval-callback"
    base = eval_callback(evalcb, gguf, None, args.threads)
    steered = eval_callback(evalcb, gguf, f"{one}:{c}", args.threads)
    summary["block_output"] = check_shift(base, steered, layer, c * vectors.direction(layer))
    steered3 = eval_callback(evalcb, gguf, f"{three}:{c}", args.threads)
    first = min(vectors.layers)
    summary["three_layer_file"] = check_shift(base, steered3, first, c * vectors.direction(first))

    log("2. steered text")
    completer = args.bin / "llama-completion"
    prompts = load_eval_prompts(tok, limit=args.prompts)
    coefs = [-c, 0.0, c]
    texts = {"llama_cpp": {k: [] for k in coefs}, "transformers": {k: [] for k in coefs}}
    for prompt in prompts:
        for k in coefs:
            control = f"{one}:{k}" if k else None
            text, ids = completion(completer, gguf, prompt, args.tokens, args.threads, control)
            texts["llama_cpp"][k].append(text)
            steer = SteeredModel(model, vectors, layers=[layer], coefficient=k) if k else None
            texts["transformers"][k].append(hf_greedy(model, tok, ids, args.tokens, steer))
    scores = {
        engine: {str(k): mean(sentiment_score(v)) for k, v in by_coef.items()}
        for engine, by_coef in texts.items()
    }
    up = {e: s[str(c)] > s["0.0"] > s[str(-c)] for e, s in scores.items()}
    summary["steered_text"] = {
        "layer": layer,
        "coefficient": c,
        "prompts": len(prompts),
        "mean_sentiment": scores,
        "monotone": up,
        "example": {"prompt_0": {str(k): texts["llama_cpp"][k][0] for k in coefs}},
        "pass": all(up.values()),
    }

    log("3. merged model through convert_hf_to_gguf.py")
    merged = tune_and_merge(args.work, vectors, layer)
    out = args.work / "merged-f32.gguf"
    ok, err = convert(args.src, merged, out, args.work.parent / "pydeps")
    result: dict = {"converter_ran": ok}
    if ok:
        tuned, tuned_tok = load_model(str(merged))
        seen = []
        for prompt in prompts[:4]:
            text, ids = completion(completer, out, prompt, args.tokens, args.threads)
            hf = hf_greedy(tuned, tuned_tok, ids, args.tokens)
            seen.append({"llama_cpp": text, "transformers": hf,
                         "base": hf_greedy(model, tok, ids, args.tokens)})  # fmt: skip
        same = sum(s["llama_cpp"] == s["transformers"] for s in seen)
        result.update(
            prompts=len(seen),
            identical_texts=same,
            tuned_differs_from_base=sum(s["base"] != s["transformers"] for s in seen),
            example=seen[0],
            **{"pass": same == len(seen)},
        )
    else:
        result.update(error=err, **{"pass": False})
    summary["merged_gguf"] = result
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["pass"] = all(
        summary[k]["pass"]
        for k in ("block_output", "three_layer_file", "steered_text", "merged_gguf")
    )
    print(json.dumps(summary))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
