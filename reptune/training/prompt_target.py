"""The prompt objective: tune the behaviour instruction into the weights.

The target at each rep layer is the frozen model's activation *with the instruction in context*
(a system prompt, a prefix of the user turn, or a user-turn template, optionally after few-shot
example exchanges); the trainee sees the plain prompt. The two
inputs share the response, the assistant header and the answer tokens, so positions are aligned
token by token over it: :class:`PromptTargetCollator` builds both inputs and the map from each
plain column to its prompted column, and :func:`prompted_targets` runs the one no-grad reference
pass (:class:`~reptune.training.reference.ReferencePass`) on the prompted input and moves its
activations onto the plain columns.

Example:
    >>> collate = PromptTargetCollator(tok, "Answer cheerfully.", mode="system")
    >>> batch = collate([{"prompt": "Describe a park.", "completion": "A lovely place!"}])
    >>> sorted(k for k in batch if k.startswith("target_"))
    ['target_attention_mask', 'target_index', 'target_input_ids', 'target_position_ids']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..pairs import format_chat
from ..tokenization import adds_bos
from .collator import RepTuneCollator, position_mask

__all__ = [
    "INSTRUCTION_MODES",
    "PROMPT_TARGET_KEYS",
    "check_instruction",
    "check_prompt_target_settings",
    "PromptTargetCollator",
    "instructed_chat",
    "instructed_row",
    "prompted_targets",
]

#: Where the instruction goes: the system prompt, before the user's prompt, or a user-turn
#: template whose ``{prompt}`` is the row's prompt.
INSTRUCTION_MODES = ("system", "prefix", "template")
#: The batch entries of the prompted input; the trainer removes them before the forward pass.
PROMPT_TARGET_KEYS = (
    "target_input_ids",
    "target_attention_mask",
    "target_position_ids",
    "target_index",
)


def check_instruction(instruction: Any, mode: Any, examples: Any = ()) -> None:
    """Raise ValueError naming what is wrong with a prompted target's instruction, mode or
    example exchanges.

    Example:
        >>> check_instruction("{prompt} Be brief.", "template")
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"the behaviour instruction must be non-empty text, got {instruction!r}")
    if mode not in INSTRUCTION_MODES:
        raise ValueError(f"unknown instruction mode {mode!r}: use one of {INSTRUCTION_MODES}")
    if mode == "template" and "{prompt}" not in instruction:
        raise ValueError(
            f"a 'template' instruction must contain {{prompt}} where the user's prompt goes, got "
            f"{instruction!r}"
        )
    for pair in examples or ():
        if (
            isinstance(pair, str)
            or len(pair) != 2
            or not all(isinstance(t, str) and t.strip() for t in pair)
        ):
            raise ValueError(
                f"each example exchange must be a (user, assistant) pair of non-empty texts, got "
                f"{pair!r}"
            )


def check_prompt_target_settings(config) -> None:
    """Raise ValueError naming what is wrong with a config's prompt-target settings
    (``steer_coefficient``, ``target_instruction``, its mode and examples, ``retain_weight``).

    Example:
        >>> check_prompt_target_settings(RepTuneConfig(output_dir="x"))
    """
    c = config.steer_coefficient
    if c is not None and (
        isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c)
    ):
        raise ValueError(f"steer_coefficient must be a finite number, got {c!r}")
    if config.target_instruction_mode not in INSTRUCTION_MODES:
        raise ValueError(
            f"target_instruction_mode must be 'system', 'prefix' or 'template', got "
            f"{config.target_instruction_mode!r}"
        )
    if config.rep_target != "prompt":
        for name in ("target_instruction", "target_examples"):
            if getattr(config, name) is not None:
                raise ValueError(
                    f"{name} is only used with rep_target='prompt': drop it or set "
                    "rep_target='prompt'"
                )
        return
    if not isinstance(config.target_instruction, str) or not config.target_instruction.strip():
        raise ValueError(
            "rep_target='prompt' needs target_instruction: the behaviour instruction the "
            "frozen model sees in context (e.g. 'Answer in a cheerful tone.')"
        )
    check_instruction(
        config.target_instruction, config.target_instruction_mode, config.target_examples or ()
    )
    if config.retain_weight > 0:
        raise ValueError(
            "rep_target='prompt' takes its reference pass on the prompted input, so it "
            "cannot feed the retain term: set retain_weight=0"
        )


def instructed_row(
    row: Mapping[str, Any],
    instruction: str,
    mode: str = "system",
    examples: Sequence[Sequence[str]] = (),
) -> dict:
    """The row as the prompted model sees it: ``instruction`` in its system prompt (before the
    row's own system text), before its prompt, or as the template of its user turn; the
    ``(user, assistant)`` ``examples`` come before the turn, as the row's ``history``.

    Example:
        >>> instructed_row({"prompt": "Hi"}, "Be cheerful.", "prefix")["prompt"]
        'Be cheerful.\\n\\nHi'
        >>> instructed_row({"prompt": "Hi"}, "{prompt} Be brief.", "template")["prompt"]
        'Hi Be brief.'
    """
    check_instruction(instruction, mode, examples)
    row = {**row, "history": [tuple(e) for e in examples]} if examples else dict(row)
    if mode == "system":
        own = row.get("system")
        return {**row, "system": f"{instruction}\n\n{own}" if own else instruction}
    if mode == "template":
        return {**row, "prompt": instruction.replace("{prompt}", row["prompt"])}
    return {**row, "prompt": f"{instruction}\n\n{row['prompt']}"}


def instructed_chat(
    tokenizer,
    prompt: str,
    instruction: str,
    mode: str = "system",
    system: str | None = None,
    examples: Sequence[Sequence[str]] = (),
) -> str:
    """The chat text the prompted model answers (generation prompt included).

    Example:
        >>> instructed_chat(tok, "Describe a park.", "Answer cheerfully.")
    """
    row = instructed_row({"prompt": prompt, "system": system}, instruction, mode, examples)
    return format_chat(tokenizer, row["prompt"], "", row.get("system"), row.get("history") or ())


def _common_suffix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return n


class PromptTargetCollator(RepTuneCollator):
    """Plain and prompted inputs of each row, aligned over the response.

    Besides the plain batch of :class:`RepTuneCollator` (``input_ids``, ``attention_mask``,
    ``labels``, ``position_ids``, ``rep_mask``) it returns the prompted input
    (``target_input_ids``, ``target_attention_mask``, ``target_position_ids``) and
    ``target_index``: for each plain column of the response (assistant header and answer, the
    same tokens in both inputs), the column of the same token in the prompted input; -1
    elsewhere. ``rep_mask`` selects only aligned columns (``rep_positions`` within the response:
    ``"all"`` is the whole response, ``"completion"`` the answer). Both inputs are padded on
    ``padding_side``, with position ids counted over real tokens, so each row's activations are
    those it has alone.

    ``examples`` are few-shot ``(user, assistant)`` exchanges the prompted input shows before
    the row's turn.

    Example:
        >>> collate = PromptTargetCollator(tok, "Answer cheerfully.", padding_side="left")
    """

    def __init__(
        self,
        tokenizer,
        instruction: str,
        mode: str = "system",
        rep_positions: Any = "all",
        max_length: int | None = None,
        completion_eos: bool = True,
        use_chat_template: bool = True,
        pad_to_multiple_of: int | None = None,
        padding_side: str = "right",
        examples: Sequence[Sequence[str]] = (),
    ):
        check_instruction(instruction, mode, examples)
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        super().__init__(
            tokenizer,
            rep_positions=rep_positions,
            max_length=max_length,
            completion_eos=completion_eos,
            use_chat_template=use_chat_template,
            pad_to_multiple_of=pad_to_multiple_of,
        )
        self.instruction, self.mode, self.padding_side = instruction, mode, padding_side
        self.examples = [tuple(e) for e in examples]

    def header_length(self, row: Mapping[str, Any], prompt_ids: Sequence[int]) -> int:
        """Tokens of the assistant header that end the row's prompt (0 without a template)."""
        tok = self.tokenizer
        if not (self.use_chat_template and getattr(tok, "chat_template", None)):
            return 0
        system = row.get("system")
        messages = [{"role": "system", "content": system}] if system else []
        for user, answer in row.get("history") or ():
            messages += [
                {"role": "user", "content": user},
                {"role": "assistant", "content": answer},
            ]
        messages.append({"role": "user", "content": row["prompt"]})
        before = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        before_ids = tok(before, add_special_tokens=adds_bos(tok, before))["input_ids"]
        if list(prompt_ids[: len(before_ids)]) != list(before_ids):
            return 0  # the template's turn boundary is not a token boundary: answer only
        return len(prompt_ids) - len(before_ids)

    def _aligned(self, row: Mapping[str, Any]):
        if not isinstance(row, Mapping) or "input_ids" in row:
            raise ValueError(
                "rep_target='prompt' needs text rows {'prompt', 'completion'[, 'system']}: the "
                "prompted input is built from the prompt text"
            )
        plain, n_plain = self.encode(row)
        prompted, n_prompted = self.encode(
            instructed_row(row, self.instruction, self.mode, self.examples)
        )
        header = min(
            self.header_length(row, plain[:n_plain]),
            _common_suffix(plain[:n_plain], prompted[:n_prompted]),
        )
        answer = min(len(plain) - n_plain, len(prompted) - n_prompted)
        span = header + answer
        start_p, start_q = n_plain - header, n_prompted - header
        if plain[start_p : start_p + span] != prompted[start_q : start_q + span]:
            raise ValueError(
                "the plain and the prompted input differ inside the response: the tokenizer "
                "merges the answer with what precedes it; use a chat template"
            )
        return (plain, n_plain, start_p), (prompted, n_prompted, start_q), span

    def _pad(self, encoded: list[list[int]]):
        width = max(len(ids) for ids in encoded)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(encoded), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        offsets = []
        for i, row in enumerate(encoded):
            offset = width - len(row) if self.padding_side == "left" else 0
            ids[i, offset : offset + len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, offset : offset + len(row)] = 1
            offsets.append(offset)
        positions = (attention.cumsum(1) - 1).clamp_min(0)
        return ids, attention, positions, offsets

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("the collator got an empty batch of rows")
        aligned = [self._aligned(row) for row in rows]
        ids, attention, positions, off_p = self._pad([p[0] for p, _, _ in aligned])
        t_ids, t_attention, t_positions, off_q = self._pad([q[0] for _, q, _ in aligned])
        labels = torch.full_like(ids, -100)
        index = torch.full_like(ids, -1)
        prompt_end = torch.zeros(len(rows), dtype=torch.long)
        for i, ((plain, n_plain, start_p), (_, _, start_q), span) in enumerate(aligned):
            o = off_p[i]
            labels[i, o + n_plain : o + len(plain)] = ids[i, o + n_plain : o + len(plain)]
            prompt_end[i] = o + n_plain
            columns = torch.arange(span)
            index[i, o + start_p + columns] = off_q[i] + start_q + columns
        rep_mask = position_mask(self.rep_positions, attention, prompt_end) & (index >= 0)
        return {
            "input_ids": ids,
            "attention_mask": attention,
            "position_ids": positions,
            "labels": labels,
            "rep_mask": rep_mask,
            "target_input_ids": t_ids,
            "target_attention_mask": t_attention,
            "target_position_ids": t_positions,
            "target_index": index,
        }


def prompted_targets(reference, model, batch: Mapping[str, torch.Tensor], rep_mask: torch.Tensor):
    """``{layer: (batch, plain_seq, hidden)}``: the reference pass on the prompted input, each
    aligned activation moved onto its plain column (other columns hold an arbitrary prompted
    activation; ``rep_mask`` never selects them). A steering vector in the reference pass is
    added at the prompted columns of the positions ``rep_mask`` selects.

    Example:
        >>> targets = prompted_targets(trainer._reference, model, batch, batch["rep_mask"])
    """
    missing = [k for k in PROMPT_TARGET_KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"rep_target='prompt' needs the prompted input in every batch (missing {missing}): "
            "use PromptTargetCollator (RepTuneTrainer builds it from the config)"
        )
    index = batch["target_index"]
    feed = {
        "input_ids": batch["target_input_ids"],
        "attention_mask": batch["target_attention_mask"],
        "position_ids": batch["target_position_ids"],
    }
    selected = rep_mask.to(index.device).bool() & (index >= 0)
    steer_at = torch.zeros_like(feed["attention_mask"], dtype=torch.bool)
    rows, cols = selected.nonzero(as_tuple=True)
    steer_at[rows, index[rows, cols]] = True
    recorded = reference(model, feed, steer_at)
    out = {}
    for layer, hidden in recorded.items():
        gather = index.clamp_min(0).to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        out[layer] = torch.gather(hidden, 1, gather)
    return out
