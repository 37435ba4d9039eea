"""Behaviour scored by a HuggingFace text-classification model the user names.

For users who can reach the model hub (or have a classifier folder): any
``AutoModelForSequenceClassification`` checkpoint, e.g. a sentiment or toxicity classifier.
The user maps the classifier's label names to numbers; the score of an answer is the expected
value of that map under the classifier's softmax, ``sum_label p(label | answer) * value(label)``,
so it lies in ``[min value, max value]``. Only safetensors weights load and remote code stays off.

Example:
    >>> scorer = ClassifierScorer("distilbert-base-uncased-finetuned-sst-2-english",
    ...                           {"POSITIVE": 1.0, "NEGATIVE": -1.0})  # doctest: +SKIP
    >>> scorer.score(["Q"], ["What a lovely day."])  # doctest: +SKIP
    [0.99]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .base import Scorer, check_pairs

__all__ = ["ClassifierScorer"]


class ClassifierScorer(Scorer):
    """Expected label value of each answer under a sequence classifier.

    ``model`` is a Hub id or folder (or an already loaded model, then ``tokenizer`` is needed);
    ``label_values`` maps every label name of ``config.id2label`` that should count to a number
    (labels left out count 0). Answers longer than ``max_length`` tokens are truncated.
    :meth:`to_unit` maps ``[min value, max value]`` onto ``[0, 1]``.

    Example:
        >>> scorer = ClassifierScorer(folder, {"pos": 1.0, "neg": -1.0})  # doctest: +SKIP
        >>> scorer.score(["Q"], ["Nice."])  # doctest: +SKIP
    """

    axis = "behaviour"

    def __init__(
        self,
        model,
        label_values: Mapping[str, float],
        tokenizer=None,
        *,
        name: str | None = None,
        higher_is_better: bool = True,
        batch_size: int = 32,
        max_length: int = 512,
    ):
        if not label_values:
            raise ValueError("label_values must map at least one label name to a number")
        if isinstance(model, str):
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
            model = AutoModelForSequenceClassification.from_pretrained(
                model, use_safetensors=True, trust_remote_code=False
            )
        elif tokenizer is None:
            raise ValueError("give the tokenizer when passing a loaded model")
        labels = model.config.id2label
        unknown = sorted(set(label_values) - set(labels.values()))
        if unknown:
            raise ValueError(
                f"labels {unknown} are not in the classifier's labels {sorted(labels.values())}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.values = torch.tensor(
            [float(label_values.get(labels[i], 0.0)) for i in range(len(labels))]
        )
        self.score_range = (float(self.values.min()), float(self.values.max()))
        if self.score_range[0] == self.score_range[1]:
            raise ValueError("label_values give every label the same number: nothing to score")
        source = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.name = f"classifier {source}"
        self.higher_is_better = higher_is_better
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        check_pairs(prompts, answers)
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(answers), self.batch_size):
            batch = self.tokenizer(
                list(answers[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            probs = self.model(**batch).logits.float().softmax(-1).cpu()
            scores.extend((probs @ self.values).tolist())
        return scores
