"""A/B measurements: items and their prompts (:mod:`.datasets`), letter probabilities at the
answer position (:mod:`.letters`), reading the chosen letter from free text (:mod:`.parsing`) and
scoring items by letter or by generation (:mod:`.scoring`).

Example:
    >>> from reptune.evaluation.ab.scoring import evaluate_ab
    >>> from reptune.evaluation.ab.datasets import load_items
"""
