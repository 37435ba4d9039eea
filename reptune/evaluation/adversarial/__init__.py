"""Adversarial measurements: the GCG suffix search (:mod:`.gcg`) and attacks on steered and
tuned models (:mod:`.attack`).

Example:
    >>> from reptune.evaluation.adversarial.attack import compare_attacks
"""
