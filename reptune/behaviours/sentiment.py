"""Sentiment (positive vs negative tone): pairs, evaluation prompts and two offline scorers.

The data ship with the package (``reptune/data``): matched contrastive replies whose wording
differs only in sentiment words, with a fixed train/test split; neutral open prompts for steering
evaluation; hand-labelled sentences, and hand-labelled answers of each evaluated condition, for
checking the scorers. Prompts split by topic with hard negatives, and the prompting baseline's
candidate wordings, come from :mod:`~reptune.behaviours.sentiment_prompts`. The scorers need no
network: :func:`sentiment_score` counts words from a small lexicon with negation handling, and
:func:`model_sentiment_score` reads a model's own judgement (how likely it finds the word
'positive' rather than 'negative' after the text).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from ..io import data_path, read_jsonl
from ..pairs import ContrastivePair, format_chat
from .registry import BehaviourSpec, EvalPrompt, LabelledGenerations, register_behaviour
from .sentiment_prompts import (
    PROMPT_SPLITS,
    InstructionCandidate,
    TopicPrompt,
    load_instruction_candidates,
    load_topic_prompts,
    relevance_candidates,
)

__all__ = [
    "SPLITS",
    "POSITIVE_WORDS",
    "NEGATIVE_WORDS",
    "NEGATORS",
    "NEGATION_WINDOW",
    "JUDGE_TEMPLATE",
    "JUDGE_THRESHOLD",
    "load_sentiment_rows",
    "load_sentiment_pairs",
    "load_eval_prompts",
    "load_scorer_check",
    "load_heldout_text",
    "sentiment_score",
    "model_sentiment_logit",
    "model_sentiment_score",
    "fit_judge_threshold",
    "POSITIVE_INSTRUCTION",
    "load_train_prompts",
    "positivity",
    "load_labelled_sentiment",
    "load_labelled_generations",
    "load_split_prompts",
    "PROMPT_SPLITS",
    "TopicPrompt",
    "load_topic_prompts",
    "relevance_candidates",
    "InstructionCandidate",
    "load_instruction_candidates",
    "SENTIMENT_SPEC",
]

SPLITS = ("train", "test", "all")

# Written for general English prose, not fitted to any model output. Words that mostly
# describe physical qualities (warm, cold, bright, fast, slow, hard...) are left out.
POSITIVE_WORDS = frozenset(
    """
good great excellent wonderful lovely nice fine superb brilliant fantastic amazing awesome
marvellous marvelous splendid terrific outstanding perfect delightful delight delighted
delicious tasty fresh beautiful gorgeous stunning pretty charming elegant attractive happy
happily glad pleased joy joyful cheerful cheery merry content satisfied satisfying thrilled
excited exciting enjoy enjoyed enjoying enjoyable fun love loved loving adore adored
liked kind kindly friendly welcoming helpful polite generous gracious
considerate patient gentle caring thoughtful comfortable comfy cosy cozy calm peaceful relaxed
relaxing soothing pleasant pleasure pleasing smooth clean tidy spotless sunny
safe reliable sturdy useful worthwhile worth rewarding valuable effective efficient easy
convenient success successful triumph win won winning proud impressive impressed
inspiring inspired interesting fascinating captivating gripping engaging clever smart skilled
talented graceful hopeful optimistic confident encouraging encouraged supportive grateful
thankful thanks best better improve improved improving thriving healthy beloved fond
glorious heavenly magical magnificent memorable remarkable favourite favorite recommend
hilarious funny laugh laughed smile smiled smiling refreshing refreshed lively vibrant
welcome blessed lucky fortunate cherish cherished admire admired praise praised bliss
blissful upbeat positive radiant sweet adorable affectionate heartwarming uplifting
""".split()
)

NEGATIVE_WORDS = frozenset(
    """
bad awful terrible horrible dreadful poor worse worst nasty ugly disgusting gross vile
lousy rubbish mediocre inferior sad unhappy miserable gloomy depressed depressing sorrow
upset angry furious annoyed annoying irritated irritating frustrated frustrating grumpy
cross hate hated hates hating loathe dislike disliked rude unfriendly hostile cruel
selfish careless lazy impatient unhelpful dirty filthy messy stale soggy burnt bland greasy
broken faulty cheap flimsy useless pointless worthless waste wasted fail failed failing
failure flop disaster disastrous mess problem problems trouble painful pain hurt hurts
ache sick ill weak tired exhausted exhausting draining boring bored dull tedious tiresome
dreary bleak grim dismal noisy crowded cramped uncomfortable stressful stressed
anxious worried worry worrying nervous afraid scared scary fear frightening frightened
disappointing disappointed disappointment regret regretted sorry unfortunately unpleasant
harsh rough awkward confusing confused difficult lonely lost ruin ruined ruins damaged
complain complained complaint negative dangerous unsafe sloppy clumsy unreliable overpriced
expensive ridiculous absurd outrageous pathetic horrid hideous stupid silly wrong dead
dying withered rotten blame fault hopeless helpless doomed nightmare misery
""".split()
)

NEGATORS = frozenset(
    "not no never nothing nobody none neither nor without hardly barely cannot".split()
)
#: A negator flips the polarity of lexicon words up to this many words after it.
NEGATION_WINDOW = 3

#: Plain-text continuation read by the model judge: " positive" vs " negative" comes next.
JUDGE_TEMPLATE = "{text} Overall, the experience described above was"
#: Logit threshold of the judge for the embedded SmolLM2-135M-Instruct: what
#: :func:`fit_judge_threshold` returns for it (the accuracy-maximising cut on the 200 training
#: replies of the sentiment pairs). Other models need their own.
JUDGE_THRESHOLD = 3.74

#: The prompting baseline: a system prompt that asks for the behaviour (as AxBench's prompting
#: baseline does), used on the same prompts as every other condition.
POSITIVE_INSTRUCTION = "Respond in a warm, positive and upbeat tone."

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[.,;:!?]")


def load_sentiment_rows(split: str = "all") -> list[dict]:
    """Raw sentiment rows (``id``, ``split``, ``prompt``, ``positive``, ``negative``).

    Example:
        >>> rows = load_sentiment_rows("test")
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    rows = read_jsonl(data_path("sentiment_pairs.jsonl"))
    return rows if split == "all" else [r for r in rows if r["split"] == split]


def load_sentiment_pairs(
    tokenizer=None, split: str = "all", system: str | None = None
) -> list[ContrastivePair]:
    """Sentiment pairs as chat texts: the user prompt, then the positive or negative reply.

    The two replies of a pair differ only in sentiment words, so the direction read at the last
    token is the tone of the reply. ``split`` is the shipped split (``"train"``: 100 pairs,
    ``"test"``: 24 pairs, disjoint prompts) or ``"all"``.

    Example:
        >>> train = load_sentiment_pairs(tok, split="train")
        >>> vecs = extract_vectors(model, tok, train, layers=range(30))
    """
    return [
        ContrastivePair(
            format_chat(tokenizer, row["prompt"], row["positive"], system),
            format_chat(tokenizer, row["prompt"], row["negative"], system),
            {"id": row["id"], "split": row["split"], "prompt": row["prompt"]},
        )
        for row in load_sentiment_rows(split)
    ]


def load_train_prompts(split: str = "train") -> list[str]:
    """The plain user prompts of a split of the sentiment pairs (for self-generated training
    rows; none of them is an evaluation prompt).

    Example:
        >>> prompts = load_train_prompts()
    """
    return list(dict.fromkeys(row["prompt"] for row in load_sentiment_rows(split)))


def load_eval_prompts(tokenizer=None, limit: int | None = None, chat: bool = True) -> list[str]:
    """Neutral open prompts for steering evaluation (none appears in the pairs).

    With ``chat`` each prompt is formatted as a chat turn ready for generation.

    Example:
        >>> prompts = load_eval_prompts(tok, limit=16)
    """
    prompts = [row["prompt"] for row in read_jsonl(data_path("sentiment_eval_prompts.jsonl"))][
        :limit
    ]
    return [format_chat(tokenizer, p) for p in prompts] if chat else prompts


def load_scorer_check() -> list[tuple[str, int]]:
    """Hand-labelled sentences ``(text, label)`` with label +1 / -1, for checking scorers.

    Example:
        >>> texts, labels = zip(*load_scorer_check())
    """
    return [
        (row["text"], int(row["label"]))
        for row in read_jsonl(data_path("sentiment_scorer_check.jsonl"))
    ]


def load_heldout_text() -> str:
    """Neutral descriptive paragraphs (about 4.7 KB) for perplexity checks.

    Example:
        >>> text = load_heldout_text()
    """
    return data_path("heldout_text.txt").read_text(encoding="utf-8")


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'")
    out = []
    for tok in _WORD.findall(text):
        if tok.endswith("n't"):
            out += [tok[:-3], "not"]
        else:
            out.append(tok)
    return out


def _lexicon_counts(text: str) -> tuple[int, int]:
    pos = neg = 0
    since_negator = NEGATION_WINDOW + 1
    for tok in _tokens(text):
        if tok in ".,;:!?":
            since_negator = NEGATION_WINDOW + 1
            continue
        if tok in NEGATORS:
            since_negator = 0
            continue
        since_negator += 1
        polarity = (tok in POSITIVE_WORDS) - (tok in NEGATIVE_WORDS)
        if polarity and since_negator <= NEGATION_WINDOW:
            polarity = -polarity
        pos += polarity > 0
        neg += polarity < 0
    return pos, neg


def sentiment_score(texts: Sequence[str] | str) -> list[float]:
    """Lexicon sentiment in [-1, 1]: ``(positive - negative) / (positive + negative)`` words.

    A negator (``not``, ``never``, ``n't``, ...) flips the next :data:`NEGATION_WINDOW` words up
    to the next punctuation mark. A text with no lexicon word scores 0.

    Example:
        >>> sentiment_score(["a lovely day", "not good at all", "a table"])
        [1.0, -1.0, 0.0]
    """
    if isinstance(texts, str):
        texts = [texts]
    scores = []
    for text in texts:
        pos, neg = _lexicon_counts(text)
        scores.append((pos - neg) / (pos + neg) if pos + neg else 0.0)
    return scores


def _word_ids(tokenizer, word: str) -> list[int]:
    # The first token of each spelling ("positive", " positive", "Positive", " Positive"); for
    # the embedded model every spelling is a single token.
    ids = []
    for variant in (word, " " + word, word.capitalize(), " " + word.capitalize()):
        encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
        if encoded and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


@torch.no_grad()
def model_sentiment_logit(
    model, tokenizer, texts: Sequence[str] | str, batch_size: int = 16
) -> list[float]:
    """``log P(positive) - log P(negative)`` as the next word after :data:`JUDGE_TEMPLATE`.

    Example:
        >>> model_sentiment_logit(model, tok, ["What a lovely day."])
    """
    from ..evaluation.ab.letters import next_token_log_probs

    if isinstance(texts, str):
        texts = [texts]
    prompts = [JUDGE_TEMPLATE.format(text=" ".join(t.split())) for t in texts]
    logp = next_token_log_probs(model, tokenizer, prompts, batch_size)
    pos_ids, neg_ids = _word_ids(tokenizer, "positive"), _word_ids(tokenizer, "negative")
    shared = set(pos_ids) & set(neg_ids)
    pos_ids = [i for i in pos_ids if i not in shared]
    neg_ids = [i for i in neg_ids if i not in shared]
    if not pos_ids or not neg_ids:
        raise ValueError("the tokenizer has no distinct first token for 'positive'/'negative'")
    pos = torch.logsumexp(logp[:, pos_ids], -1)
    neg = torch.logsumexp(logp[:, neg_ids], -1)
    return (pos - neg).tolist()


def model_sentiment_score(
    model,
    tokenizer,
    texts: Sequence[str] | str,
    threshold: float = JUDGE_THRESHOLD,
    batch_size: int = 16,
) -> list[float]:
    """The model's own judgement in [-1, 1]: ``2 * sigmoid(logit - threshold) - 1``.

    ``logit`` is :func:`model_sentiment_logit`; ``threshold`` centres it (the default was fixed on
    the training replies of the sentiment pairs, not on evaluation data). Score with the
    unsteered, untuned model so the judge does not change with the intervention.

    Example:
        >>> model_sentiment_score(model, tok, ["What a lovely day.", "What an awful day."])
    """
    logits = torch.tensor(model_sentiment_logit(model, tokenizer, texts, batch_size))
    return (2 * torch.sigmoid(logits - threshold) - 1).tolist()


def fit_judge_threshold(model, tokenizer, batch_size: int = 16) -> float:
    """The judge threshold for another model: the accuracy-maximising cut on the training replies.

    Uses only the ``train`` split of the sentiment pairs (positive replies labelled +1, negative
    -1), so evaluation prompts and the test split stay unseen. The cut is the midpoint between
    neighbouring sorted logits.

    Example:
        >>> threshold = fit_judge_threshold(model, tok)
        >>> model_sentiment_score(model, tok, replies, threshold=threshold)
    """
    rows = load_sentiment_rows("train")
    texts = [r["positive"] for r in rows] + [r["negative"] for r in rows]
    labels = [True] * len(rows) + [False] * len(rows)
    logits = model_sentiment_logit(model, tokenizer, texts, batch_size)
    values = sorted(set(logits))
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])]
    return max(cuts, key=lambda cut: sum((x > cut) == y for x, y in zip(logits, labels)))


def positivity(judge_model, tokenizer, texts: Sequence[str], batch_size: int = 32) -> list[float]:
    """The behaviour axis in ``[0, 1]``: ``(model_sentiment_score + 1) / 2`` under the judge.

    Judge with the untuned base model, so the yardstick never moves with the intervention.

    Example:
        >>> positivity(base, tok, ["What a lovely day.", "What an awful day."])
    """
    scores = model_sentiment_score(judge_model, tokenizer, texts, batch_size=batch_size)
    return [(s + 1) / 2 for s in scores]


def _vader():
    from ..evaluation.scorers import VaderSentiment

    return VaderSentiment()


def load_labelled_sentiment() -> tuple[list[str], list[str], list[float]]:
    """``(prompts, answers, labels)`` of the 90 hand-labelled sentences (-1 / 0 / +1; no prompt).

    Example:
        >>> prompts, texts, labels = load_labelled_sentiment()
    """
    rows = read_jsonl(data_path("sentiment_labelled.jsonl"))
    return [""] * len(rows), [r["text"] for r in rows], [float(r["label"]) for r in rows]


def load_labelled_generations() -> LabelledGenerations:
    """128 answers of eight evaluated conditions (16 each), labelled by hand for sentiment
    (-1 / 0 / +1) and fluency (1 fluent, 0 degenerate: loops, broken grammar, gibberish).

    Example:
        >>> gens = load_labelled_generations()
        >>> gens.conditions[0], gens.behaviour[0], gens.fluent[0]
        ('rep-prompt', 0.0, 0.0)
    """
    rows = read_jsonl(data_path("sentiment_generations_labelled.jsonl"))
    return LabelledGenerations(
        *([r[k] for r in rows] for k in ("prompt", "answer")),
        *([float(r[k]) for r in rows] for k in ("sentiment", "fluent")),
        [r["condition"] for r in rows],
    )


def load_split_prompts(split: str, limit: int | None = None) -> list[EvalPrompt]:
    """The topic-disjoint dev or test prompts, each with its hard negative.

    Example:
        >>> load_split_prompts("dev", 2)[0].hard_negatives
    """
    return [
        EvalPrompt(p.prompt, (p.hard_negative,) if p.hard_negative else ())
        for p in load_topic_prompts(split, limit)
    ]


#: Sentiment as a registered behaviour: shipped pairs and prompts, judged by VADER (the model's
#: own :func:`positivity` judgement stays as a labelled extra column).
SENTIMENT_SPEC = BehaviourSpec(
    "sentiment",
    load_sentiment_pairs,
    load_train_prompts,
    lambda: load_eval_prompts(chat=False),
    lambda judge, tok, texts, prompts: positivity(judge, tok, texts),
    POSITIVE_INSTRUCTION,
    behaviour_scorer=_vader,
    behaviour_labels=load_labelled_sentiment,
    generation_labels=load_labelled_generations,
    split_prompts=load_split_prompts,
    instruction_candidates=load_instruction_candidates,
)
register_behaviour(SENTIMENT_SPEC)
