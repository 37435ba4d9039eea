"""The measurements a run reports, each number with its interval: generations scored on three
axes per condition, perplexity against the base model, closeness to the steered model, and the
cosine of tuned activations with the vector.

Example:
    >>> texts = generate_condition(model, tok, prompts, coefficient=0.2, new_tokens=24)
    >>> rows = perplexity_rows({"base": (base, tok), "tuned": (tuned, tok)}, text, 256, 128)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..evaluation.ab.scoring import generate_texts
from ..evaluation.lm.perplexity import compare_perplexity, perplexity, perplexity_interval
from ..evaluation.open_ended.quality import QualityScores, summarize_quality
from ..hooks import forward_until, recording
from ..pairs import format_chat
from ..tokenization import encode_batch
from ..training.collator import parse_positions

__all__ = [
    "generate_condition",
    "quality_rows",
    "perplexity_rows",
    "target_cosines",
]


def generate_condition(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    coefficient: float | None = None,
    system: str | None = None,
    new_tokens: int = 24,
    batch_size: int = 32,
) -> list[str]:
    """Greedy answers of one condition to plain user prompts.

    ``coefficient`` steers (``model`` is then a SteeredModel); ``system`` adds a system prompt
    (the prompting baseline).

    Example:
        >>> generate_condition(steered, tok, ["Describe your street."], coefficient=0.2)
    """
    chat = [format_chat(tokenizer, p, "", system) for p in prompts]
    coefs = None if coefficient is None else torch.full((len(chat),), float(coefficient))
    return generate_texts(
        model,
        tokenizer,
        chat,
        coefficients=coefs,
        max_new_tokens=new_tokens,
        batch_size=batch_size,
    )


def quality_rows(scores: Mapping[str, QualityScores]) -> list[dict]:
    """One row per condition: each axis's mean with its 95% bootstrap interval.

    Example:
        >>> quality_rows({"base": base_scores, "steered": steered_scores})[0]["harmonic"]
    """
    rows = []
    for name, score in scores.items():
        row: dict = {"condition": name, "n": len(score.harmonic)}
        for axis, mean in summarize_quality(score).items():
            row.update({axis: mean.value, f"{axis}_low": mean.low, f"{axis}_high": mean.high})
        rows.append(row)
    return rows


def perplexity_rows(
    models: Mapping[str, tuple], text: str, window: int, stride: int, reference: str | None = None
) -> list[dict]:
    """Perplexity of each model on ``text`` with its own bootstrap interval over windows, and the
    paired-bootstrap difference to ``reference`` (default: the first model) in separate columns.

    ``models`` maps a name to ``(model, tokenizer)``; a SteeredModel works too.

    Example:
        >>> perplexity_rows({"base": (base, tok), "steered": (steered, tok)}, text, 256, 128)
    """
    results = {
        name: perplexity(m, tok, text, window=window, stride=stride, batch_size=8)
        for name, (m, tok) in models.items()
    }
    reference = reference or next(iter(results))
    base = results[reference]
    rows = []
    for name, res in results.items():
        low, high = perplexity_interval(res)
        row = {
            "model": name,
            "perplexity": res.perplexity,
            "perplexity_low": low,
            "perplexity_high": high,
            "windows": len(res.nll),
        }
        if name != reference:
            diff = compare_perplexity(base, res)["perplexity_difference"]
            row.update(
                difference=diff.estimate,
                difference_low=diff.low,
                difference_high=diff.high,
                relative_change=res.perplexity / base.perplexity - 1.0,
            )
        rows.append(row)
    return rows


@torch.no_grad()
def target_cosines(model, tokenizer, vectors, rows, layers, positions, batch_size=16) -> dict:
    """Mean cosine between the block outputs at ``layers`` and the vector, over the prompts of
    ``rows`` (``{"prompt"[, "system"]}``) at ``positions`` (the training position language:
    ``"-3"``, ``"all"``, ``"prompt"``...).

    Example:
        >>> target_cosines(tuned, tok, vecs, test_rows, [10], "all")
        {10: 0.31}
    """
    positions = parse_positions(positions) if isinstance(positions, str) else positions
    # The texts are prompts only: the training language's "completion" selects nothing there.
    positions = "generated" if positions == "completion" else positions
    texts = [format_chat(tokenizer, r["prompt"], "", r.get("system")) for r in rows]
    found: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(texts), batch_size):
        batch = encode_batch(tokenizer, texts[start : start + batch_size], position_ids=True)
        rec, fns = recording(layers)
        forward_until(model, fns, positions, **batch)  # no block past the deepest layer runs
        for layer in layers:
            h = rec.hidden(layer)[rec.mask(layer)].float()
            v = vectors[layer].float().to(h.device)
            found[layer].append(torch.nn.functional.cosine_similarity(h, v.expand_as(h), dim=-1))
    return {layer: float(torch.cat(vals).mean()) for layer, vals in found.items()}
