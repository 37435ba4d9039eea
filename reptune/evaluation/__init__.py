"""Evaluation: A/B behaviour scoring, steering sweeps, robustness, perplexity, trade-off curves,
capability benchmarks, a pairwise judge over OpenAI-compatible endpoints, embedding scores and
reports.

Names are imported on first use, so ``reptune.evaluation.letters`` (used by extraction) does not
pull in scipy and matplotlib.

Example:
    >>> from reptune.evaluation import load_items, evaluate_ab
    >>> result = evaluate_ab(model, tok, load_items("caa/test_refusal_ab.json", limit=200))
    >>> print(results["dishonest"].target)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ab": (
        "CONDITIONS",
        "ABResult",
        "ItemResult",
        "evaluate_ab",
        "generate_texts",
        "score_items",
        "score_letters",
        "summarize",
        "with_coefficient",
    ),
    "attack": ("AttackConfig", "AttackResult", "attack_items", "compare_attacks", "gcg_attack"),
    "capabilities": ("capability_rows", "evaluate_capabilities"),
    "embedding": ("EmbeddingModelUnavailable", "ExemplarScorer", "TextEmbedder", "embedding_score"),
    "endpoint": ("ChatEndpoint", "EndpointError"),
    "judge": ("PairwiseResult", "judge_pairwise", "judge_report", "parse_verdict"),
    "datasets": (
        "ABItem",
        "format_choices",
        "item_prompt",
        "load_items",
        "read_records",
        "records_to_items",
        "sample_items",
    ),
    "loading": ("load_for_evaluation",),
    "letters": ("letter_probabilities", "letter_token_ids", "next_token_log_probs"),
    "parsing": ("CLAIM_ALIASES", "find_answer", "parse_answer"),
    # The function ``perplexity`` is not re-exported: the submodule of that name would shadow
    # it. Import it from reptune.evaluation.perplexity.
    "perplexity": (
        "PerplexityResult",
        "compare_perplexity",
        "load_text",
        "perplexity_interval",
        "sliding_windows",
        "window_nll",
    ),
    "plots": ("plot_sweep", "plot_tradeoff"),
    "quality": (
        "AXES",
        "QualityScores",
        "continuation_log_probs",
        "harmonic_mean",
        "next_token_kl",
        "score_generations",
        "summarize_quality",
    ),
    "report": ("Report", "Section"),
    "robustness": ("negative_multiples", "plot_robustness", "robustness_sweep"),
    "stats": (
        "Mean",
        "PairedDifference",
        "Rate",
        "mean_interval",
        "paired_bootstrap",
        "rate",
        "wilson_interval",
    ),
    "sweep": ("SweepResult", "resolve_conditions", "steering_sweep"),
    "tables": ("markdown_table", "write_table"),
    "tradeoff": (
        "CurveFit",
        "TradeoffResult",
        "fit_behaviour",
        "fit_helpfulness",
        "tradeoff_study",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
