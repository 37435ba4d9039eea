"""Sliding-window perplexity and a paired bootstrap comparison of two models.

Windows follow the HuggingFace perplexity guide: windows of ``window`` tokens start every
``stride`` tokens, and each window scores only the tokens the previous window did not, with the
rest of the window as context. With ``stride < window`` every token but the first is scored
exactly once, with at least ``window - stride`` tokens of context (except near the start); with
``stride == window`` the first token of each window has no context and is not scored. The
published study used WikiText-2 test, ``window=1024``, ``stride=512``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...hooks import eval_mode
from ...layers import model_device
from ...tokenization import context_length
from ..stats import PairedDifference, paired_bootstrap

__all__ = [
    "Window",
    "PerplexityResult",
    "sliding_windows",
    "window_nll",
    "perplexity",
    "load_text",
    "compare_perplexity",
]


@dataclass(frozen=True)
class Window:
    """Tokens ``begin:end`` go through the model; tokens ``target_start:end`` are scored.

    Example:
        >>> Window(begin=512, end=1536, target_start=1024)
    """

    begin: int
    end: int
    target_start: int


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """The windows covering ``n_tokens`` tokens (see the module docstring).

    Example:
        >>> sliding_windows(10, window=4, stride=2)[:2]
        [Window(begin=0, end=4, target_start=1), Window(begin=2, end=6, target_start=4)]
    """
    if window < 2 or not 0 < stride <= window:
        raise ValueError(f"need window >= 2 and 0 < stride <= window, got {window}, {stride}")
    if n_tokens < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {n_tokens}")
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        # The first token of a window has no context inside it, so it is never a target.
        out.append(Window(begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return out


@dataclass
class PerplexityResult:
    """Summed negative log-likelihood (nats) and scored-token count of each window.

    Example:
        >>> res = perplexity(model, tok, text, window=1024, stride=512)
        >>> res.perplexity
    """

    nll: list[float]
    tokens: list[int]
    window: int
    stride: int
    meta: dict = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return int(sum(self.tokens))

    @property
    def mean_nll(self) -> float:
        """Mean NLL per scored token."""
        return float(sum(self.nll) / self.total_tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(
            perplexity=self.perplexity,
            mean_nll=self.mean_nll,
            total_tokens=self.total_tokens,
            n_windows=len(self.nll),
        )
        return out


@torch.no_grad()
def window_nll(
    model,
    input_ids: torch.Tensor,
    window: int = 1024,
    stride: int = 512,
    *,
    batch_size: int = 1,
    progress: bool = False,
) -> PerplexityResult:
    """Per-window NLL of the token sequence ``input_ids`` (1-D) under ``model``.

    Works with a plain model, a PEFT model or a :class:`~reptune.steering.SteeredModel`.

    Example:
        >>> ids = tok(text, return_tensors="pt").input_ids[0]
        >>> window_nll(model, ids, window=512, stride=256).perplexity
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    ids = torch.as_tensor(input_ids).reshape(-1)
    limit = context_length(model)
    if limit is not None and window > limit:
        raise ValueError(f"window {window} exceeds the model's context of {limit} tokens")
    spans = sliding_windows(len(ids), window, stride)
    device = model_device(model)
    nll, counts = [], []
    # Windows of equal length share a batch (all but the last have the full length).
    groups: list[list[Window]] = []
    for span in spans:
        same = groups and groups[-1][0].end - groups[-1][0].begin == span.end - span.begin
        if same and len(groups[-1]) < batch_size:
            groups[-1].append(span)
        else:
            groups.append([span])
    with eval_mode(model):
        for group in tqdm(groups, desc="perplexity", disable=not progress, leave=False):
            batch = torch.stack([ids[w.begin : w.end] for w in group]).to(device)
            logits = model(
                input_ids=batch, attention_mask=torch.ones_like(batch), use_cache=False
            ).logits
            for row, w in enumerate(group):
                # Logit at position t - 1 predicts token t.
                first, last = w.target_start - w.begin, w.end - w.begin
                pred = logits[row, first - 1 : last - 1].float()
                nll.append(float(F.cross_entropy(pred, batch[row, first:last], reduction="sum")))
                counts.append(last - first)
    return PerplexityResult(nll, counts, window, stride, {"n_input_tokens": len(ids)})


def perplexity(
    model,
    tokenizer,
    text: str,
    window: int | None = 1024,
    stride: int | None = 512,
    *,
    max_tokens: int | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> PerplexityResult:
    """Sliding-window perplexity of ``text`` (tokenised once, special tokens as the tokenizer adds).

    ``window`` defaults to the published 1024 tokens, capped at the model's context; ``stride``
    to half the window. ``max_tokens`` truncates the text (for quick runs).

    Example:
        >>> perplexity(model, tok, load_text("wikitext", dataset_config="wikitext-2-raw-v1"))
    """
    limit = context_length(model)
    window = min(window or 1024, limit) if limit else (window or 1024)
    stride = stride or max(window // 2, 1)
    stride = min(stride, window)
    ids = tokenizer(text, return_tensors="pt", verbose=False)["input_ids"][0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return window_nll(model, ids, window, stride, batch_size=batch_size, progress=progress)


def load_text(
    source: str | Path,
    *,
    dataset_config: str | None = None,
    split: str = "test",
    column: str = "text",
    joiner: str = "\n\n",
) -> str:
    """The text of a local file (``.txt``, or a column of ``.json``/``.jsonl``/``.csv``) or of
    the HuggingFace dataset named ``source`` (rows joined with ``joiner``, as the HF guide does).

    Example:
        >>> text = load_text("wikitext", dataset_config="wikitext-2-raw-v1", split="test")
    """
    path = Path(str(source)).expanduser()
    if path.is_file():
        if path.suffix.lower() in (".json", ".jsonl", ".csv", ".tsv"):
            from ..ab.datasets import read_records

            rows = read_records(path)
            if rows and column not in rows[0]:
                raise ValueError(f"{path} has no column {column!r}; columns: {sorted(rows[0])}")
            return joiner.join(str(row[column]) for row in rows)
        return path.read_text(encoding="utf-8")
    if path.suffix or str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{source} does not exist")
    import datasets  # only for Hub names

    return joiner.join(datasets.load_dataset(str(source), dataset_config, split=split)[column])


def _ppl_difference(nll_a, nll_b, tokens, axis=-1):
    total = tokens.sum(axis=axis)
    return np.exp(nll_b.sum(axis=axis) / total) - np.exp(nll_a.sum(axis=axis) / total)


def _nll_difference(nll_a, nll_b, tokens, axis=-1):
    return (nll_b.sum(axis=axis) - nll_a.sum(axis=axis)) / tokens.sum(axis=axis)


def _ppl(nll, tokens, axis=-1):
    return np.exp(nll.sum(axis=axis) / tokens.sum(axis=axis))


def perplexity_interval(
    result: PerplexityResult, *, n_resamples: int = 9999, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of a perplexity, resampling its windows.

    Example:
        >>> low, high = perplexity_interval(perplexity(model, tok, text))
    """
    from scipy.stats import bootstrap

    nll, tokens = np.asarray(result.nll, dtype=float), np.asarray(result.tokens, dtype=float)
    if len(nll) < 2:
        return (result.perplexity, result.perplexity)
    ci = bootstrap(
        (nll, tokens),
        _ppl,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return (float(ci.low), float(ci.high))


def compare_perplexity(
    a: PerplexityResult,
    b: PerplexityResult,
    *,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Paired bootstrap over windows of ``b - a``: perplexity and mean NLL per token.

    Both results must come from the same windows of the same text.

    Example:
        >>> cmp = compare_perplexity(perplexity(base, tok, text), perplexity(tuned, tok, text))
        >>> cmp["perplexity_difference"].significant
    """
    if a.tokens != b.tokens or a.window != b.window or a.stride != b.stride:
        raise ValueError("the two perplexity results were not computed on the same windows")
    data = (a.nll, b.nll, a.tokens)
    ppl: PairedDifference = paired_bootstrap(
        data, _ppl_difference, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    nll: PairedDifference = paired_bootstrap(
        data, _nll_difference, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    return {
        "perplexity_a": a.perplexity,
        "perplexity_b": b.perplexity,
        "perplexity_difference": ppl,
        "nll_difference": nll,
        "n_windows": len(a.nll),
    }
