"""Open-ended answers: behaviour/fluency/relevance scores (:mod:`.quality`), the pairwise judge
(:mod:`.judge`) over OpenAI-compatible endpoints (:mod:`.endpoint`) and embedding scores
(:mod:`.embedding`).

Example:
    >>> from reptune.evaluation.open_ended.quality import score_generations
"""
