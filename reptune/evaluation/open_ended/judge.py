"""Pairwise judging of open-ended answers by a model behind any OpenAI-compatible endpoint.

Each prompt's two answers are shown to the judge twice, once in each order. The judge's reply is
parsed strictly: it must be ``A``, ``B`` or ``tie`` (case and surrounding punctuation aside);
anything else is a parse failure, counted and never guessed. A system wins a prompt only when
it wins in both orders; two ties, or orders that disagree, make a tie (as in MT-Bench); a prompt
with a failed round is left out of the win rates. Position bias is how often the answer shown
first wins a round that has a winner (0.5 = none).

Example:
    >>> judge = ChatEndpoint("http://127.0.0.1:8000/v1", model="embedded:smollm2-135m")
    >>> result = judge_pairwise(prompts, base_answers, steered_answers, judge,
    ...                         names=("base", "steered"))
    >>> result.summary()["win_rate"]["steered"]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...io import write_json
from ..stats import Rate, rate
from .endpoint import REQUEST_STATUSES, ChatEndpoint, EndpointError, display_url

__all__ = [
    "JUDGE_TEMPLATE",
    "DEFAULT_CRITERION",
    "JudgeRound",
    "PairwiseResult",
    "parse_verdict",
    "judge_pairwise",
    "judge_report",
]

DEFAULT_CRITERION = "Which answer is better: more helpful, accurate, fluent and on topic?"
JUDGE_TEMPLATE = (
    "You compare two answers to the same prompt.\n\n"
    "[Prompt]\n{prompt}\n\n"
    "[Answer A]\n{answer_a}\n\n"
    "[Answer B]\n{answer_b}\n\n"
    "{criterion}\n"
    "Reply with exactly one word: A, B, or tie."
)
VERDICTS = ("A", "B", "tie")
# The whole reply must be one verdict word; only surrounding punctuation, quotes, brackets and
# markdown emphasis are allowed ("**A**", "(B).", "'tie'").
_VERDICT = re.compile(r"^[\W_]*(a|b|tie)[\W_]*$", re.IGNORECASE)
TIE = "tie"


def parse_verdict(reply: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` for a strict verdict, else ``None`` (a parse failure).

    Example:
        >>> parse_verdict(" **B**."), parse_verdict("Tie"), parse_verdict("A is better")
        ('B', 'tie', None)
    """
    match = _VERDICT.match(reply or "")
    if match is None:
        return None
    word = match.group(1)
    return TIE if word.lower() == TIE else word.upper()


@dataclass
class JudgeRound:
    """One question to the judge: prompt ``item`` with system ``first`` shown as answer A.

    ``verdict`` is the parsed label (A / B / tie, None on a parse failure or a failed request),
    ``winner`` the system it names (or ``"tie"``), ``error`` why a request failed.
    """

    item: int
    first: str
    second: str
    reply: str
    verdict: str | None
    winner: str | None
    error: str | None = None

    @property
    def parsed(self) -> bool:
        return self.verdict is not None


@dataclass
class PairwiseResult:
    """The rounds of a pairwise judgement and what they add up to.

    Example:
        >>> result.summary()["position_bias"]        # Rate: first-shown answer wins
        >>> result.outcomes()                        # per prompt: a name, "tie" or None
        >>> result.save("runs/judge/judge.json")
    """

    names: tuple[str, str]
    prompts: list[str]
    rounds: list[JudgeRound]
    judge: dict = field(default_factory=dict)

    def by_item(self) -> list[list[JudgeRound]]:
        """The rounds of each prompt, in prompt order."""
        grouped: list[list[JudgeRound]] = [[] for _ in self.prompts]
        for r in self.rounds:
            grouped[r.item].append(r)
        return grouped

    def outcomes(self) -> list[str | None]:
        """Per prompt: the system that won both orders, ``"tie"``, or None (a round failed)."""
        out = []
        for rounds in self.by_item():
            winners = {r.winner for r in rounds}
            if len(rounds) != 2 or not all(r.parsed for r in rounds):
                out.append(None)
            else:
                out.append(winners.pop() if len(winners) == 1 else TIE)
        return out

    def summary(self) -> dict:
        """Counts and rates (each a :class:`~reptune.evaluation.stats.Rate`, Wilson 95%)."""
        outcomes = self.outcomes()
        judged = [o for o in outcomes if o is not None]
        n = len(judged)
        consistent = sum(
            o is not None and len({r.winner for r in rounds}) == 1
            for o, rounds in zip(outcomes, self.by_item())
        )
        parsed = [r for r in self.rounds if r.parsed]
        decisive = [r for r in parsed if r.winner != TIE]
        errors = sum(r.error is not None for r in self.rounds)
        return {
            "names": list(self.names),
            "prompts": len(self.prompts),
            "rounds": len(self.rounds),
            "judged_prompts": n,
            "win_rate": {name: rate(judged.count(name), n) for name in self.names},
            "tie_rate": rate(judged.count(TIE), n),
            "consistency": rate(consistent, n),
            "position_bias": rate(sum(r.winner == r.first for r in decisive), len(decisive)),
            "verdict_counts": {v: sum(r.verdict == v for r in parsed) for v in VERDICTS},
            "parse_failures": rate(len(self.rounds) - len(parsed) - errors, len(self.rounds)),
            "request_errors": errors,
        }

    def item_rows(self) -> list[dict]:
        """One row per prompt: the verdict of each order and the outcome."""
        rows = []
        for i, (outcome, rounds) in enumerate(zip(self.outcomes(), self.by_item())):
            row = {"item": i, "prompt": self.prompts[i]}
            for r in rounds:
                verdict = r.winner if r.parsed else "request error" if r.error else "unparsed"
                row[f"shown_first_{r.first}"] = verdict
                row[f"reply_first_{r.first}"] = r.reply
            row["outcome"] = outcome if outcome is not None else "left out"
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        summary = self.summary()
        summary["win_rate"] = {k: v.as_dict() for k, v in summary["win_rate"].items()}
        summary = {k: (v.as_dict() if isinstance(v, Rate) else v) for k, v in summary.items()}
        return {
            "names": list(self.names),
            "judge": self.judge,
            "summary": summary,
            "prompts": self.prompts,
            "rounds": [asdict(r) for r in self.rounds],
        }

    def save(self, path: str | Path) -> Path:
        """Write every round and the summary as JSON (atomically)."""
        return write_json(path, self.to_dict())


def judge_pairwise(
    prompts: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    endpoint: ChatEndpoint,
    *,
    names: tuple[str, str] = ("a", "b"),
    criterion: str = DEFAULT_CRITERION,
    template: str = JUDGE_TEMPLATE,
    system: str | None = None,
    parse: Callable[[str], str | None] = parse_verdict,
    max_tokens: int = 16,
    max_workers: int = 1,
) -> PairwiseResult:
    """Ask ``endpoint`` which of two answers to each prompt is better, in both orders.

    ``answers_a[i]`` (system ``names[0]``) and ``answers_b[i]`` (``names[1]``) answer
    ``prompts[i]``. ``template`` receives ``prompt``, ``answer_a``, ``answer_b`` and
    ``criterion``; ``parse`` maps the judge's reply to ``"A"``, ``"B"``, ``"tie"`` or None.
    Requests rejected for their content (HTTP 400/413/422, e.g. too long for the judge) are
    counted as failed rounds; other endpoint errors stop the run. The judge is asked greedily
    (temperature 0); ``max_workers`` requests run at once.

    Example:
        >>> result = judge_pairwise(prompts, base, steered, endpoint, names=("base", "steered"),
        ...                         criterion="Which answer is more positive in tone?")
    """
    if not len(prompts) == len(answers_a) == len(answers_b):
        raise ValueError(
            f"need one answer of each system per prompt: got {len(prompts)} prompts, "
            f"{len(answers_a)} and {len(answers_b)} answers"
        )
    if len(names) != 2 or names[0] == names[1] or TIE in names:
        raise ValueError(f"names must be two different system names other than 'tie': {names}")
    for key in ("{prompt}", "{answer_a}", "{answer_b}"):
        if key not in template:
            raise ValueError(f"the judge template lacks the field {key}")
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    answers = dict(zip(names, (answers_a, answers_b)))
    jobs = [
        (i, first, second) for i in range(len(prompts)) for first, second in (names, names[::-1])
    ]

    def ask(job) -> JudgeRound:
        i, first, second = job
        text = template.format(
            prompt=prompts[i],
            answer_a=answers[first][i],
            answer_b=answers[second][i],
            criterion=criterion,
        )
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}
        ]
        try:
            reply = endpoint.complete(messages, max_tokens=max_tokens, temperature=0.0)
        except EndpointError as err:
            if err.status not in REQUEST_STATUSES:
                raise
            return JudgeRound(i, first, second, "", None, None, error=str(err))
        verdict = parse(reply)
        if verdict not in (*VERDICTS, None):
            raise ValueError(f"parse returned {verdict!r}; it must return 'A', 'B', 'tie' or None")
        winner = {"A": first, "B": second, TIE: TIE}.get(verdict)
        return JudgeRound(i, first, second, reply, verdict, winner)

    if max_workers == 1:
        rounds = [ask(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers) as pool:
            rounds = list(pool.map(ask, jobs))
    judge = {"base_url": display_url(endpoint.base_url), "model": endpoint.model}
    judge["criterion"] = criterion
    return PairwiseResult(tuple(names), list(prompts), rounds, judge)


def _rate_row(metric: str, r: Rate) -> dict:
    return {"metric": metric, "value": r.value, "low": r.low, "high": r.high, "k": r.k, "n": r.n}


def judge_report(result: PairwiseResult, title: str = "Pairwise judge") -> dict:
    """Report material: ``dict(title, text, tables=[{name, rows}])`` for a report section.

    Example:
        >>> material = judge_report(result)
        >>> sec = report.section(material["title"], material["text"])
        >>> for t in material["tables"]:
        ...     sec.add_table(t["name"], t["rows"])
    """
    s = result.summary()
    a, b = result.names
    judge = result.judge
    text = (
        f"{judge.get('model', 'the judge')} at {judge.get('base_url', '?')} compared {a} and {b} "
        f"on {s['prompts']} prompts, asked in both orders ({s['rounds']} rounds; criterion: "
        f"{judge.get('criterion', '?')!r}). A system wins a prompt only when it wins in both "
        "orders; disagreeing orders count as a tie. "
        f"{b} won {s['win_rate'][b]}, {a} won {s['win_rate'][a]}, ties {s['tie_rate']} of the "
        f"{s['judged_prompts']} prompts with both rounds parsed. "
        f"Position bias (the first-shown answer wins a decisive round): {s['position_bias']}; "
        "50% means none. "
        f"Parse failures: {s['parse_failures']} of rounds; request errors: {s['request_errors']}."
    )
    summary_rows = [
        _rate_row(f"win_rate/{a}", s["win_rate"][a]),
        _rate_row(f"win_rate/{b}", s["win_rate"][b]),
        _rate_row("tie_rate", s["tie_rate"]),
        _rate_row("consistency", s["consistency"]),
        _rate_row("position_bias", s["position_bias"]),
        _rate_row("parse_failures", s["parse_failures"]),
    ]
    verdict_rows = [{"verdict": v, "rounds": k} for v, k in s["verdict_counts"].items()]
    return {
        "title": title,
        "text": text,
        "tables": [
            {"name": "judge_summary", "rows": summary_rows},
            {"name": "judge_verdicts", "rows": verdict_rows},
            {"name": "judge_items", "rows": result.item_rows()},
        ],
    }
