"""Evaluation: measurements and scorers, grouped by what they measure.

- :mod:`~reptune.evaluation.ab`: A/B items, letter probabilities, answer parsing, A/B scoring;
- :mod:`~reptune.evaluation.studies`: steering sweeps, robustness and the trade-off study;
- :mod:`~reptune.evaluation.adversarial`: suffix attacks (GCG) against steered and tuned models;
- :mod:`~reptune.evaluation.open_ended`: generation quality, the pairwise judge, endpoints and
  embedding scores;
- :mod:`~reptune.evaluation.lm`: perplexity and capability benchmarks;
- :mod:`~reptune.evaluation.stats` and :mod:`~reptune.evaluation.batched`: intervals and the
  shared batching.

Reports, tables and plots are in :mod:`reptune.reporting`. Names are imported on first use, so
``reptune.evaluation.ab.letters`` does not pull in scipy.

Example:
    >>> from reptune.evaluation import load_items, evaluate_ab
    >>> result = evaluate_ab(model, tok, load_items("caa/test_refusal_ab.json", limit=200))
    >>> print(result.target)
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    ".ab.scoring": (
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
    ".ab.datasets": (
        "ABItem",
        "format_choices",
        "item_prompt",
        "load_items",
        "read_records",
        "records_to_items",
    ),
    ".ab.sampling": ("limit_options", "sample_items"),
    ".ab.letters": ("letter_probabilities", "letter_token_ids", "next_token_log_probs"),
    ".ab.parsing": ("CLAIM_ALIASES", "find_answer", "parse_answer"),
    ".adversarial.attack": (
        "AttackConfig",
        "AttackResult",
        "attack_items",
        "compare_attacks",
        "gcg_attack",
    ),
    ".lm.capabilities": ("capability_rows", "evaluate_capabilities"),
    # The function ``perplexity`` is not re-exported; import it from
    # reptune.evaluation.lm.perplexity.
    ".lm.perplexity": (
        "PerplexityResult",
        "compare_perplexity",
        "load_text",
        "perplexity_interval",
        "sliding_windows",
        "window_nll",
    ),
    ".open_ended.embedding": (
        "EmbeddingModelUnavailable",
        "ExemplarScorer",
        "TextEmbedder",
        "embedding_score",
    ),
    ".open_ended.endpoint": ("ChatEndpoint", "EndpointError"),
    ".open_ended.judge": ("PairwiseResult", "judge_pairwise", "judge_report", "parse_verdict"),
    ".open_ended.quality": (
        "AXES",
        "QualityScores",
        "continuation_log_probs",
        "harmonic_mean",
        "next_token_kl",
        "score_generations",
        "summarize_quality",
    ),
    ".stats": (
        "HolmResult",
        "Mean",
        "PairedDifference",
        "Rate",
        "holm",
        "mean_interval",
        "minimum_detectable_effect",
        "paired_bootstrap",
        "rate",
        "wilson_interval",
    ),
    ".paired": (
        "PairedComparison",
        "ShiftRatio",
        "as_score_table",
        "compare_family",
        "paired_comparison",
        "shift_ratio",
        "sign_flip_p_value",
    ),
    ".studies.robustness": ("negative_multiples", "robustness_sweep"),
    ".studies.sweep": ("SweepResult", "resolve_conditions", "steering_sweep"),
    ".studies.tradeoff": (
        "CurveFit",
        "TradeoffResult",
        "fit_behaviour",
        "fit_helpfulness",
        "tradeoff_study",
    ),
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
