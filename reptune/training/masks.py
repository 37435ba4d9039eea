"""Where the representation terms act in a training batch, and the check that they act at all.

Batches from :class:`~reptune.training.collator.RepTuneCollator` carry ``rep_mask`` (and
``retain_mask``); batches from other collators (trl's SFT collator) are given masks derived from
their labels: the completion starts at the first labelled token.

Example:
    >>> rep, retain = batch_masks(batch, [-7], "all", want_rep=True, want_retain=False)
"""

from __future__ import annotations

import logging

import torch

from .collator import position_mask, prompt_end_from_labels

__all__ = ["batch_masks", "rows_without_positions"]

logger = logging.getLogger(__name__)

# Rows scanned before training to check that the position spec selects a token in each.
_SCAN_ROWS = 50_000


def batch_masks(
    batch, rep_positions, retain_positions, *, want_rep: bool, want_retain: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``(rep_mask, retain_mask)`` of a batch, restricted to real tokens.

    ``rep_mask`` defaults to every real token when no rep layer is wanted; ``retain_mask`` is
    None when the batch has none and no retain term is wanted.
    """
    attention = batch.get("attention_mask")
    if attention is None or attention.dim() != 2:
        raise ValueError(
            "representation tuning needs a 2-D attention_mask in every batch (padding-free "
            "or packed batches are not supported)"
        )
    real = attention.bool()
    rep, retain = batch.get("rep_mask"), batch.get("retain_mask")
    if (rep is None and want_rep) or (retain is None and want_retain):
        if "labels" not in batch:
            raise ValueError("batches need a rep_mask column or labels to locate the prompt")
        end = prompt_end_from_labels(batch["labels"], attention)
        if rep is None and want_rep:
            rep = position_mask(rep_positions, attention, end)
        if retain is None and want_retain:
            retain = position_mask(retain_positions, attention, end)
    rep = rep.bool() & real if rep is not None else real
    retain = retain.bool() & real if retain is not None else None
    return rep, retain


def rows_without_positions(dataset, collator, masks, *, strict: bool) -> tuple[list[int], int]:
    """Indices of the dataset rows in which ``masks(batch)[0]`` selects no token, and the
    number of rows scanned (at most 50,000, in batches of 256).

    With ``strict`` a collator error is raised; otherwise (another trainer's collator, which may
    need its column removal first) the scan is skipped.
    """
    if isinstance(dataset, (str, bytes)) or not (
        hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
    ):
        return [], 0  # iterable datasets are not scanned
    n = min(len(dataset), _SCAN_ROWS)
    bad: list[int] = []
    for start in range(0, n, 256):
        rows = [dataset[i] for i in range(start, min(n, start + 256))]
        try:
            batch = collator(rows)
        except Exception as err:
            if strict:
                raise
            logger.info("positions not checked before training (%s)", err)
            return [], 0
        rep_mask, _ = masks(batch)
        bad += (start + (~rep_mask.any(1)).nonzero().flatten()).tolist()
    return bad, n
