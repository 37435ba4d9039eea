"""Language-model quality: perplexity on held-out text (:mod:`.perplexity`) and capability
benchmarks (:mod:`.capabilities`).

Example:
    >>> from reptune.evaluation.lm.perplexity import compare_perplexity
"""
