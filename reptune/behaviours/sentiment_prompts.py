"""Sentiment prompts split by topic, hard negatives for relevance, and prompting-baseline wordings.

``reptune/data/sentiment_prompts_v2.jsonl`` holds neutral open prompts (they ask for no tone),
each with a ``topic`` and a ``split``; no topic appears in two splits:

- ``train``: 90 prompts, 30 topics (for self-generated training rows);
- ``dev``: 45 prompts, 15 topics (for every choice: layer, coefficient, wording, checkpoint);
- ``test``: 126 prompts, 42 topics (reported only).

Every dev and test prompt carries a ``hard_negative``: a prompt on the same topic with another
instruction ("Describe a walk through the old market." vs "List three things sold at the old
market."), so a relevance scorer must tell the task apart, not only the topic. Rows are stored
round-robin over topics: the first ``k`` rows of a split cover ``min(k, topics)`` topics.

``reptune/data/sentiment_instructions.json`` holds candidate wordings of the prompting baseline
(system prompt, in-turn instruction, few-shot), to be chosen on dev.

Example:
    >>> test = load_topic_prompts("test")
    >>> test[0].prompt, test[0].hard_negative
    ('Describe a walk through the old market.', 'List three things sold at the old market.')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..io import data_path, read_json, read_jsonl

__all__ = [
    "PROMPT_SPLITS",
    "TopicPrompt",
    "load_topic_prompts",
    "relevance_candidates",
    "InstructionCandidate",
    "load_instruction_candidates",
]

PROMPT_SPLITS = ("train", "dev", "test")
PROMPTS_FILE = "sentiment_prompts_v2.jsonl"
INSTRUCTIONS_FILE = "sentiment_instructions.json"


@dataclass(frozen=True)
class TopicPrompt:
    """A neutral prompt with its split, topic and (dev and test) hard negative.

    Example:
        >>> load_topic_prompts("dev", limit=1)[0].as_dict()
    """

    id: int
    split: str
    topic: str
    prompt: str
    hard_negative: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def load_topic_prompts(split: str, limit: int | None = None) -> list[TopicPrompt]:
    """The prompts of one split (``"train"``, ``"dev"`` or ``"test"``), in stored order.

    ``limit`` takes the first ``limit`` prompts (spread over topics); asking for more prompts
    than the split holds raises instead of returning fewer.

    Example:
        >>> dev = load_topic_prompts("dev", limit=15)  # one prompt from each dev topic
    """
    if split not in PROMPT_SPLITS:
        raise ValueError(f"unknown prompt split {split!r}: use one of {PROMPT_SPLITS}")
    rows = [row for row in read_jsonl(data_path(PROMPTS_FILE)) if row["split"] == split]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of prompts, got {limit}")
        if limit > len(rows):
            raise ValueError(
                f"the {split} split has {len(rows)} prompts, {limit} were requested; "
                f"ask for at most {len(rows)} (or limit=None for all)"
            )
        rows = rows[:limit]
    return [
        TopicPrompt(row["id"], row["split"], row["topic"], row["prompt"], row.get("hard_negative"))
        for row in rows
    ]


def relevance_candidates(prompts: list[TopicPrompt]) -> list[str]:
    """The texts a relevance scorer ranks an answer's own prompt among: every prompt given, then
    every hard negative (duplicates dropped, order kept).

    Example:
        >>> candidates = relevance_candidates(load_topic_prompts("test"))  # 252 texts
    """
    texts = [p.prompt for p in prompts] + [p.hard_negative for p in prompts if p.hard_negative]
    return list(dict.fromkeys(texts))


@dataclass(frozen=True)
class InstructionCandidate:
    """One wording of the prompting baseline: a system prompt (or none), a template for the user
    turn (``{prompt}`` is the task) and few-shot ``(user, assistant)`` example exchanges.

    Example:
        >>> few_shot = load_instruction_candidates()["few-shot"]
        >>> text = few_shot.format(tok, "Describe a walk through the old market.")
    """

    name: str
    system: str | None
    user_template: str = "{prompt}"
    examples: tuple[tuple[str, str], ...] = ()

    def messages(self, prompt: str) -> list[dict]:
        """Chat messages for ``prompt``: system, the example exchanges, then the user turn."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.examples:
            head += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return head + [{"role": "user", "content": self.user_template.format(prompt=prompt)}]

    def format(self, tokenizer, prompt: str) -> str:
        """The generation prompt for ``prompt`` under the tokenizer's chat template (without a
        template: the messages' contents one per paragraph, then a newline)."""
        messages = self.messages(prompt)
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return "\n\n".join(m["content"] for m in messages) + "\n"


def load_instruction_candidates() -> dict[str, InstructionCandidate]:
    """The shipped prompting-baseline wordings by name (at least 4, one of them few-shot).

    Example:
        >>> sorted(load_instruction_candidates())
        ['cheerful-assistant', 'explicit-sentiment', 'few-shot', 'in-turn', 'warm-tone']
    """
    candidates = {}
    for row in read_json(data_path(INSTRUCTIONS_FILE)):
        if "{prompt}" not in row["user_template"]:
            raise ValueError(f"instruction {row['name']!r}: user_template lacks '{{prompt}}'")
        examples = tuple((user, assistant) for user, assistant in row["examples"])
        candidates[row["name"]] = InstructionCandidate(
            row["name"], row["system"], row["user_template"], examples
        )
    return candidates
