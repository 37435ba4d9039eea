"""Interpretability views: generation-time projections onto the behaviour vectors
(:mod:`.projections`, drawn by :mod:`.projection_plots`), the PCA token view (:mod:`.token_pca`)
and the layer diagnostics (:mod:`.diagnostics`).

Example:
    >>> from reptune.analysis.projections import record_projections
    >>> from reptune.analysis.diagnostics import plot_layer_accuracy
"""
