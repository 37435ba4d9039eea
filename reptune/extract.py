"""Turn contrastive pairs into one direction per layer, with per-layer diagnostics.

The model runs only up to the deepest requested layer (no later blocks, no LM head), and the
activations are aggregated as they stream in: exact running sums for the mean difference, and a
bounded reservoir of pairs (exact up to ``max_pairs_in_memory`` pairs, a uniform sample beyond)
for PCA and the diagnostics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .aggregators import (
    LayerStats,
    NormSample,
    Reservoir,
    check_direction_exists,
    first_component,
    layer_diagnostics,
)
from .hooks import Positions, eval_mode, forward_until, recording, validate_positions
from .layers import check_layers, model_device, num_layers
from .pairs import ContrastivePair, fingerprint, validate_pairs
from .tokenization import context_length, pad_batch, pad_token_id, tokenize_texts
from .vectors import SteeringVectors

__all__ = [
    "METHODS",
    "extract_vectors",
    "read_activations",
    "measure_residual_norms",
    "check_text_positions",
    "layer_diagnostics",
    "Reservoir",
]

METHODS = ("mean_diff", "pca_diff", "pca_center")


def _offsets(position: Positions) -> list[int] | None:
    if isinstance(position, int):
        return [position]
    return list(position) if isinstance(position, (list, tuple, range)) else None


def check_text_positions(position: Positions, lengths: Sequence[int], name=None) -> None:
    """Raise before any forward pass unless ``position`` selects a token of every text.

    Texts are read whole, so offsets count back from each text's last token (``-1``); ``0`` and
    above, and ``"generated"``, would select nothing. ``lengths`` are the texts' token counts.

    Example:
        >>> check_text_positions(-3, [5, 7])
    """
    name = name or "text #{}".format
    if isinstance(position, torch.Tensor):
        raise TypeError(
            "a boolean position mask selects absolute columns of one padded batch, but "
            "extraction pads each batch itself: pass offsets from the end of the text (-1 = last "
            "token) or 'all'"
        )
    if position == "generated":
        raise ValueError(
            "positions='generated' selects nothing when reading whole texts: use 'all', "
            "'prompt' or offsets from the end of the text (-1 = last token)"
        )
    offsets = _offsets(position)
    if offsets is None:
        return
    past_end = [o for o in offsets if o >= 0]
    if past_end:
        raise ValueError(
            f"position offsets {past_end} point past the end of the text: offsets count back "
            "from each text's end, -1 being its last token"
        )
    need = min(-o for o in offsets)
    short = [i for i, n in enumerate(lengths) if n < need]
    if short:
        raise ValueError(
            f"position {position!r} falls before the first token of {len(short)} text(s) "
            f"(first: {name(short[0])}, {lengths[short[0]]} tokens): the shortest text has "
            f"{min(lengths)} tokens, so offsets must lie between -{min(lengths)} and -1"
        )


def _same_up_to_position(pos: list[int], neg: list[int], position: Positions) -> bool:
    """Whether a causal model must give both token sequences the same activations there."""
    offsets = _offsets(position)
    if offsets is None:  # every token: the same only if the sequences are
        return pos == neg
    return all(pos[: len(pos) + o + 1] == neg[: len(neg) + o + 1] for o in offsets)


def _run_ids(model, pad_id, ids, layers, position, layer_path):
    """One left-padded batch of token ids run up to the deepest layer; the batch and recorder."""
    batch = pad_batch(ids, pad_id, device=model_device(model), position_ids=True)
    rec, fns = recording(layers)
    forward_until(model, fns, position, layer_path=layer_path, **batch)
    return batch, rec


def _check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


@torch.no_grad()
def read_activations(
    model,
    tokenizer,
    texts: Sequence[str],
    layers: Sequence[int],
    position: Positions = -1,
    layer_path: str | None = None,
) -> dict[int, torch.Tensor]:
    """Per-text activations ``{layer: (n, hidden)}`` (mean over the selected positions), float32.

    Runs one left-padded batch in eval mode and stops after the deepest layer.

    Example:
        >>> acts = read_activations(model, tok, ["Hello"], layers=[2, 3], position=-1)
    """
    position = validate_positions(position)
    layers = [layers] if isinstance(layers, int) else list(layers)
    n_layers = num_layers(model, layer_path)
    layer_ids = check_layers(layers, n_layers)
    ids = tokenize_texts(tokenizer, texts, max_length=context_length(model))
    check_text_positions(position, [len(seq) for seq in ids])
    with eval_mode(model):
        _, rec = _run_ids(model, pad_token_id(tokenizer), ids, layer_ids, position, layer_path)
    return {layer: rec.per_row_mean(layer % n_layers).float() for layer in layers}


def _token_norms(rec, layer: int, attention_mask: torch.Tensor) -> torch.Tensor:
    return rec.hidden(layer).float().norm(dim=-1)[attention_mask.bool()]


@torch.no_grad()
def measure_residual_norms(
    model,
    tokenizer,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    batch_size: int = 16,
    layer_path: str | None = None,
) -> dict[int, float]:
    """Median residual-stream norm of each layer over every real token of ``texts``.

    This is what coefficient 1 means in the ``"residual_norm"`` unit. The median, because a few
    tokens (the attention sink) have norms many times the typical one.

    Example:
        >>> norms = measure_residual_norms(model, tok, texts, layers=[10])
        >>> vecs = vecs.with_residual_norms(norms)
    """
    if not texts:
        raise ValueError("measure_residual_norms needs at least one text")
    _check_batch_size(batch_size)
    layer_ids = check_layers(layers, num_layers(model, layer_path))
    ids = tokenize_texts(tokenizer, texts, max_length=context_length(model))
    pad_id = pad_token_id(tokenizer)
    samples = {layer: NormSample(seed=layer) for layer in layer_ids}
    with eval_mode(model):
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            batch, rec = _run_ids(model, pad_id, chunk, layer_ids, "all", layer_path)
            for layer in layer_ids:
                samples[layer].add(_token_norms(rec, layer, batch["attention_mask"]))
    return {layer: samples[layer].median() for layer in layer_ids}


@torch.no_grad()
def extract_vectors(
    model,
    tokenizer,
    pairs: Sequence[ContrastivePair],
    layers: Sequence[int] | int | None = None,
    method: str = "mean_diff",
    position: Positions = -1,
    *,
    normalize: bool = True,
    batch_size: int = 8,
    layer_path: str | None = None,
    max_pairs_in_memory: int = 1024,
    progress: bool = True,
) -> SteeringVectors:
    """Extract one behaviour direction per layer from contrastive pairs.

    ``method``: ``"mean_diff"`` (mean of positive - negative), ``"pca_diff"`` (first principal
    component of the centred differences), ``"pca_center"`` (first component of the activations
    centred on each pair's midpoint). The sign is fixed by a vote (the positive member should
    project higher); ``normalize`` makes each vector unit-norm. ``position`` uses the hook position
    language; for full texts ``-1`` is the last token. Diagnostics per layer land in
    ``vectors.metadata["diagnostics"]``.

    Example:
        >>> vecs = extract_vectors(model, tok, pairs, layers=range(4, 12), method="mean_diff")
        >>> vecs.metadata["diagnostics"][8]["accuracy"]
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
    position = validate_positions(position)
    if isinstance(pairs, Iterator):  # a generator: read it once, here
        pairs = list(pairs)
    validate_pairs(pairs)
    pairs = list(pairs)
    n_layers = num_layers(model, layer_path)
    layer_ids = check_layers(range(n_layers) if layers is None else layers, n_layers)
    _check_batch_size(batch_size)
    if method == "pca_diff" and len(pairs) < 2:
        raise ValueError("pca_diff needs at least 2 pairs; use mean_diff for a single pair")
    if not isinstance(max_pairs_in_memory, int) or max_pairs_in_memory < 2:
        raise ValueError(f"max_pairs_in_memory must be an int >= 2, got {max_pairs_in_memory!r}")
    pos_ids, neg_ids = _tokenize_pairs(model, tokenizer, pairs, position)
    with eval_mode(model):
        stats, norm_samples = _collect(
            model, pad_token_id(tokenizer), pos_ids, neg_ids, layer_ids, position, layer_path,
            batch_size, max_pairs_in_memory, progress,
        )  # fmt: skip
    vectors, diagnostics = {}, {}
    for layer in layer_ids:
        st = stats[layer]
        pos, neg = st.pos.tensor(), st.neg.tensor()
        diffs = pos - neg
        mean = (st.diff_sum / len(pairs)).float()
        check_direction_exists(layer, method, position, pos, neg, mean)
        if method == "mean_diff":
            vec, pc_ratio = mean, None
        elif method == "pca_diff":
            vec, pc_ratio = first_component(diffs, center=True)
        else:
            mid = (pos + neg) / 2
            vec, pc_ratio = first_component(torch.cat([pos - mid, neg - mid]), center=False)
        # Sign vote: the positive member should project higher in most pairs.
        if (diffs @ vec > 0).float().mean() < 0.5:
            vec = -vec
        if normalize:
            vec = vec / vec.norm()
        vectors[layer] = vec.contiguous()
        diag = layer_diagnostics(pos, neg, vec)
        if pc_ratio is not None:
            diag["pc1_explained_variance_ratio"] = pc_ratio
        diag["pairs_used"] = len(diffs)
        diagnostics[layer] = diag
    metadata = SteeringVectors.describe_model(model)
    metadata.update(
        method=method,
        position=position,
        normalized=normalize,
        num_pairs=len(pairs),
        data_fingerprint=fingerprint(pairs),
        diagnostics=diagnostics,
        residual_norms={layer: norm_samples[layer].median() for layer in layer_ids},
    )
    return SteeringVectors(vectors, metadata)


def _tokenize_pairs(model, tokenizer, pairs, position) -> tuple[list, list]:
    """Token ids of every positive and negative text, checked before the first batch runs."""
    limit = context_length(model)
    pos = tokenize_texts(
        tokenizer, [p.positive for p in pairs], max_length=limit, name="pair {} (positive)".format
    )
    neg = tokenize_texts(
        tokenizer, [p.negative for p in pairs], max_length=limit, name="pair {} (negative)".format
    )
    check_text_positions(position, [len(x) for x in pos], "pair {} (positive)".format)
    check_text_positions(position, [len(x) for x in neg], "pair {} (negative)".format)
    if all(_same_up_to_position(a, b, position) for a, b in zip(pos, neg)):
        raise ValueError(
            f"every pair's positive and negative texts have the same tokens up to position "
            f"{position!r}, so the model gives them the same activations there: read a position "
            "at or after the first token where they differ (-1 = the last token)"
        )
    return pos, neg


def _collect(
    model, pad_id, pos_ids, neg_ids, layer_ids, position, layer_path, batch_size, capacity,
    progress,
):  # fmt: skip
    """Stream the pairs through the model; per-layer running sums, reservoirs and norm samples."""
    stats: dict[int, LayerStats] = {}
    norm_samples = {layer: NormSample(seed=layer) for layer in layer_ids}
    # One batch holds the positives and negatives of `batch_size` pairs.
    starts = range(0, len(pos_ids), batch_size)
    for start in tqdm(starts, desc="extracting", disable=not progress, unit="batch"):
        n = len(pos_ids[start : start + batch_size])
        ids = pos_ids[start : start + n] + neg_ids[start : start + n]
        batch, rec = _run_ids(model, pad_id, ids, layer_ids, position, layer_path)
        for layer in layer_ids:
            # The residual norms ride along at no extra forward pass: they define the
            # "residual_norm" coefficient unit of these vectors.
            norm_samples[layer].add(_token_norms(rec, layer, batch["attention_mask"]))
            act = rec.per_row_mean(layer).float().to("cpu")
            pos, neg = act[:n], act[n:]
            if layer not in stats:
                stats[layer] = LayerStats(
                    torch.zeros(act.shape[1], dtype=torch.float64),
                    Reservoir(capacity, seed=layer),
                    Reservoir(capacity, seed=layer),
                )
            st = stats[layer]
            st.diff_sum += (pos - neg).double().sum(0)
            # Same seed for both reservoirs keeps positives and negatives aligned.
            st.pos.add(pos)
            st.neg.add(neg)
    return stats, norm_samples
