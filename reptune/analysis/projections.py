"""Generation-time projections: every layer x token of a generation, projected onto a vector.

:func:`record_projections` runs ``generate`` and, through :func:`reptune.hooks.intervene`, reads
the output of each requested decoder block at every prompt and generated token: its scalar
projection ``h . v / |v|`` onto the layer's vector and its cosine ``h . v / (|h| |v|)``. This is
the view in which a behaviour direction can be seen to switch on a few tokens before the answer.

Which tokens have a value: ``generate`` feeds the prompt and then each generated token but the
last one (the last sampled token is never read back), so the last column of every row is NaN.
Rows stop at their first end-of-sequence token, so a left-padded batch gives the same numbers as
each prompt alone.

Example:
    >>> res = record_projections(model, tok, prompts, vecs, layers=[6, 10, 14], max_new_tokens=30)
    >>> res.save("runs/x/projections")
    >>> plot_projections(res, "runs/x/projections/prompt0.png", index=0)  # projection_plots
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..hooks import CallPositions, intervene
from ..io import atomic_folder, jsonable, read_folder_whole, read_json
from ..layers import check_layers, model_device, num_layers, unwrap_model
from ..steering import SteeredModel
from ..tokenization import context_length, encode_batch
from ..vectors import SteeringVectors

__all__ = ["KINDS", "ProjectionResult", "record_projections", "check_kind"]

#: What a heatmap can show: the scalar projection ``h . v / |v|`` or the cosine.
KINDS = ("projection", "cosine")
TENSORS_FILE = "projections.safetensors"
METADATA_FILE = "projections.json"


class _ProjectionTap:
    """Intervention that keeps ``h . unit`` and ``|h|`` of every token of each forward call.

    Only two numbers per token are kept, so a generation without KV cache (which re-reads the
    whole sequence at every step) costs no more memory than one with it.
    """

    def __init__(self, vector: torch.Tensor):
        vector = vector.detach().float()
        self.unit = vector / vector.norm()
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor, call: CallPositions):
        h = hidden.detach().float()
        proj = h @ self.unit.to(h.device)
        self.calls.append((call.columns.cpu(), proj.cpu(), h.norm(dim=-1).cpu()))
        return None

    def assemble(self, batch: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(projection, norm)`` of shape ``(batch, width)`` by absolute column (NaN if unread).

        A later call overwrites an earlier one's column: without KV cache every step re-reads
        the sequence, and the values agree.
        """
        proj = torch.full((batch, width), math.nan)
        norm = torch.full((batch, width), math.nan)
        for columns, p, n in self.calls:
            keep = columns < width
            proj[:, columns[keep]] = p[:, keep]
            norm[:, columns[keep]] = n[:, keep]
        return proj, norm


@dataclass
class ProjectionResult:
    """Per-prompt ``(layers, tokens)`` projections and cosines recorded during generation.

    ``projection[i][j, t]`` is the projection of block ``layers[j]``'s output at token ``t`` of
    prompt ``i`` (prompt tokens first, then the generated ones); ``prompt_lengths[i]`` is where the
    generation starts. The last token of each row was never read: its values are NaN.

    Example:
        >>> res.tokens[0][res.prompt_lengths[0]:]  # the generated tokens of prompt 0
        >>> res.projection[0][:, -5:]  # every layer at the last five tokens
    """

    prompts: list[str]
    layers: list[int]
    token_ids: list[list[int]]
    tokens: list[list[str]]
    prompt_lengths: list[int]
    projection: list[torch.Tensor]
    cosine: list[torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def values(self, index: int, kind: str = "projection") -> torch.Tensor:
        """The ``(layers, tokens)`` table of prompt ``index`` for ``kind`` (see :data:`KINDS`)."""
        check_kind(kind)
        return (self.projection if kind == "projection" else self.cosine)[index]

    def completion(self, index: int, tokenizer) -> str:
        """The generated text of prompt ``index``."""
        return tokenizer.decode(
            self.token_ids[index][self.prompt_lengths[index] :], skip_special_tokens=True
        )

    def rows(self) -> list[dict[str, Any]]:
        """Long-format rows: one per prompt x layer x token, with both kinds.

        Example:
            >>> write_table(res.rows(), "runs/x/tables/projections")
        """
        out = []
        for i in range(len(self)):
            n_prompt = self.prompt_lengths[i]
            for j, layer in enumerate(self.layers):
                for t, token in enumerate(self.tokens[i]):
                    out.append(
                        {
                            "prompt": i,
                            "layer": layer,
                            "position": t - n_prompt,
                            "segment": "prompt" if t < n_prompt else "generated",
                            "token": token,
                            "projection": _number(self.projection[i][j, t]),
                            "cosine": _number(self.cosine[i][j, t]),
                        }
                    )
        return out

    def summary_rows(self, last: int = 5, name: str | None = None) -> list[dict[str, Any]]:
        """Per-layer means over prompt tokens, the last ``last`` prompt tokens and generated ones.

        The first token is left out of the prompt mean: it is the attention sink, whose norm is
        many times the others'. ``name`` adds a ``model`` column.

        Example:
            >>> res.summary_rows(last=5, name="steered")[0]["generated_projection"]
        """
        rows = []
        for j, layer in enumerate(self.layers):
            row = {"model": name} if name is not None else {}
            row["layer"] = layer
            for kind in KINDS:
                spans = {"prompt": [], f"last{last}": [], "generated": []}
                for i in range(len(self)):
                    values, n = self.values(i, kind)[j], self.prompt_lengths[i]
                    spans["prompt"].append(values[1:n])
                    spans[f"last{last}"].append(values[max(n - last, 0) : n])
                    spans["generated"].append(values[n:])
                for span, parts in spans.items():
                    row[f"{span}_{kind}"] = _number(torch.nanmean(torch.cat(parts)))
            rows.append(row)
        return rows

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``projections.safetensors`` (NaN-padded tensors) + ``projections.json``.

        Example:
            >>> res.save("runs/x/projections")
        """
        width = max(len(ids) for ids in self.token_ids)
        shape = (len(self), len(self.layers), width)
        tensors = {
            "projection": torch.full(shape, math.nan),
            "cosine": torch.full(shape, math.nan),
            "token_ids": torch.full((len(self), width), -1, dtype=torch.long),
        }
        for i, ids in enumerate(self.token_ids):
            tensors["projection"][i, :, : len(ids)] = self.projection[i]
            tensors["cosine"][i, :, : len(ids)] = self.cosine[i]
            tensors["token_ids"][i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        meta = {
            "prompts": self.prompts,
            "layers": self.layers,
            "tokens": self.tokens,
            "prompt_lengths": self.prompt_lengths,
            "lengths": [len(ids) for ids in self.token_ids],
            "metadata": self.metadata,
        }
        text = json.dumps(jsonable(meta), indent=2, allow_nan=False, default=str)
        with atomic_folder(directory) as tmp:
            save_file(tensors, str(tmp / TENSORS_FILE))
            (tmp / METADATA_FILE).write_text(text + "\n", encoding="utf-8")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> ProjectionResult:
        """Read a folder written by :meth:`save`.

        Example:
            >>> res = ProjectionResult.load("runs/x/projections")
        """
        return read_folder_whole(Path(directory), cls._read)

    @classmethod
    def _read(cls, directory: Path) -> ProjectionResult:
        meta = read_json(directory / METADATA_FILE, "projection metadata")
        path = directory / TENSORS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {directory} is not a projections folder")
        raw = load_file(str(path))
        lengths = meta["lengths"]
        return cls(
            prompts=meta["prompts"],
            layers=[int(x) for x in meta["layers"]],
            token_ids=[raw["token_ids"][i, :n].tolist() for i, n in enumerate(lengths)],
            tokens=meta["tokens"],
            prompt_lengths=meta["prompt_lengths"],
            projection=[raw["projection"][i, :, :n] for i, n in enumerate(lengths)],
            cosine=[raw["cosine"][i, :, :n] for i, n in enumerate(lengths)],
            metadata=meta.get("metadata", {}),
        )


def _number(x) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {KINDS}")


def _eos_ids(model, tokenizer, generate_kwargs) -> set[int]:
    eos = generate_kwargs.get("eos_token_id")
    if eos is None:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _layer_vectors(vectors, layers, model) -> tuple[dict[int, torch.Tensor], list[int]]:
    if not isinstance(vectors, SteeringVectors):
        vectors = SteeringVectors({int(k): v for k, v in dict(vectors).items()})
    vectors.check_compatible(model)
    n_layers = num_layers(model)
    layer_ids = check_layers(vectors.layers if layers is None else list(layers), n_layers)
    missing = [layer for layer in layer_ids if layer not in vectors]
    if missing:
        raise ValueError(f"no vector for layers {missing}; the vectors have {vectors.layers}")
    zero = [layer for layer in layer_ids if float(vectors[layer].norm()) == 0.0]
    if zero:
        raise ValueError(f"the vector of layers {zero} is zero: there is nothing to project onto")
    return {layer: vectors[layer] for layer in layer_ids}, layer_ids


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty strings")
    return prompts


def _steering_context(model, part: slice, width: int):
    """The base model to generate with and the steering to hold around it (or None)."""
    if not isinstance(model, SteeredModel):
        return model, None
    coef = torch.as_tensor(model.coefficient)
    coef = coef[part] if coef.numel() > 1 else None
    return model.model, model.steering(coefficient=coef, prompt_length=width)


@torch.no_grad()
def record_projections(
    model,
    tokenizer,
    prompts: Sequence[str] | str,
    vectors: SteeringVectors | Mapping[int, torch.Tensor],
    layers: Sequence[int] | None = None,
    *,
    max_new_tokens: int = 30,
    use_cache: bool = True,
    batch_size: int = 8,
    **generate_kwargs,
) -> ProjectionResult:
    """Generate from each prompt and record every layer x token projection onto ``vectors``.

    ``model`` is a plain model, a PEFT model or a :class:`~reptune.steering.SteeredModel`.
    Layer ``i`` is the output of block ``i``; each layer is projected onto its own vector
    (``layers`` defaults to every layer of ``vectors``). Prompts are used as given (format chat
    turns first) and run in left-padded batches; decoding is greedy unless ``generate_kwargs``
    say otherwise. ``use_cache=False`` re-reads the whole sequence at every step (same numbers).

    With a ``SteeredModel`` (or any intervention already attached to the model) the recorded
    stream is the one *after* the steering addition: at the steered layer it is the block output
    plus ``c * v``, the tensor the next block reads. A row's ``SteeredModel`` coefficient may be a
    tensor with one value per prompt.

    Example:
        >>> steered = SteeredModel(model, vecs, layers=[10], coefficient=0.15)
        >>> res = record_projections(steered, tok, prompts, vecs, layers=[6, 10, 14])
        >>> res.projection[0].shape  # (3, prompt + generated tokens)
    """
    prompts = _check_prompts(prompts)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for key in ("num_return_sequences", "num_beams"):
        if generate_kwargs.get(key, 1) != 1:
            raise ValueError(f"{key} must be 1: each prompt gives one recorded generation")
    by_layer, layer_ids = _layer_vectors(vectors, layers, model)
    if isinstance(model, SteeredModel):
        coef = torch.as_tensor(model.coefficient)
        if coef.numel() not in (1, len(prompts)):
            raise ValueError(
                f"the SteeredModel has {coef.numel()} coefficients for {len(prompts)} prompts: "
                "give one per prompt or a single float"
            )
    limit = context_length(model)
    batches = []
    for start in range(0, len(prompts), batch_size):
        # Every batch is encoded before the first generate, so a too-long prompt fails early.
        batch = encode_batch(tokenizer, prompts[start : start + batch_size], max_length=limit)
        if limit is not None and batch["input_ids"].shape[1] + max_new_tokens > limit:
            raise ValueError(
                f"prompt ({batch['input_ids'].shape[1]} tokens) + max_new_tokens "
                f"({max_new_tokens}) exceeds the model's context of {limit}: lower max_new_tokens"
            )
        batches.append((slice(start, start + len(batch["input_ids"])), batch))
    eos = _eos_ids(model, tokenizer, generate_kwargs)
    settings = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    settings.update(pad_token_id=tokenizer.pad_token_id, disable_compile=True)
    settings.update(generate_kwargs)
    device = model_device(model)
    token_ids, prompt_lengths, projection, cosine = [], [], [], []
    for part, batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        width = batch["input_ids"].shape[1]
        taps = {layer: _ProjectionTap(by_layer[layer]) for layer in layer_ids}
        base, steering = _steering_context(model, part, width)
        with ExitStack() as stack:
            if steering is not None:
                stack.enter_context(steering)
            # Entered after the steering hooks, so these run after them: the stream after c*v.
            stack.enter_context(intervene(base, taps, "all", prompt_length=width))
            out = base.generate(
                **batch, max_new_tokens=max_new_tokens, use_cache=use_cache, **settings
            )
        out = out.cpu()
        per_layer = [taps[layer].assemble(out.shape[0], out.shape[1]) for layer in layer_ids]
        proj = torch.stack([p for p, _ in per_layer], 1)  # (batch, layers, columns)
        norm = torch.stack([n for _, n in per_layer], 1)
        pads = (batch["attention_mask"] == 0).sum(1).tolist()
        for row, pad in enumerate(pads):
            generated = out[row, width:].tolist()
            stop = next((k + 1 for k, t in enumerate(generated) if t in eos), len(generated))
            end = width + stop
            p = proj[row, :, pad:end].clone()
            # The last token is never read by the model; in a batch it may have been read as
            # input for other rows' steps (or not at all), so blank it for every row alike.
            p[:, -1] = math.nan
            n = norm[row, :, pad:end]
            token_ids.append(out[row, pad:end].tolist())
            prompt_lengths.append(width - pad)
            projection.append(p)
            cosine.append(p / n)
    tokens = [[tokenizer.decode([t]) for t in ids] for ids in token_ids]
    steered = model if isinstance(model, SteeredModel) else None
    metadata = {
        "model_name": getattr(unwrap_model(model), "name_or_path", None),
        "vectors": {
            k: v
            for k, v in (getattr(vectors, "metadata", None) or {}).items()
            if k in ("model_name", "method", "position", "data_fingerprint")
        },
        "steering": None
        if steered is None
        else {
            "layers": steered.layers,
            "coefficient": torch.as_tensor(steered.coefficient).tolist(),
            "coefficient_unit": steered.coefficient_unit,
            "mode": steered.mode,
            "positions": str(steered.positions),
            "recorded": "after the steering addition",
        },
        "max_new_tokens": max_new_tokens,
        "use_cache": use_cache,
        "projection": "h . v / |v| of the output of block `layer`",
        "cosine": "h . v / (|h| |v|)",
    }
    return ProjectionResult(
        prompts, layer_ids, token_ids, tokens, prompt_lengths, projection, cosine, metadata
    )
