"""Steering studies: coefficient sweeps (:mod:`.sweep`), the same sweep on several models
(:mod:`.robustness`) and the alignment/helpfulness trade-off (:mod:`.tradeoff`).

Example:
    >>> from reptune.evaluation.studies.sweep import steering_sweep
"""
