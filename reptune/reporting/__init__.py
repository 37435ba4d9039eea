"""Reporting: the report document (:mod:`.report`), its tables (:mod:`.tables`) and plots
(:mod:`.plots`), the evaluation command's sections (:mod:`.sections`), the pipeline's report built
from its stage files (:mod:`.run_report`) and the card's view of a report (:mod:`.report_view`).

Example:
    >>> from reptune.reporting import Report
    >>> report = Report("Refusal steering", model={"spec": "embedded:smollm2-135m"})
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    ".plots": ("plot_conditions", "plot_rates", "plot_robustness", "plot_sweep", "plot_tradeoff"),
    ".report": ("Report", "Section"),
    ".run_report": ("add_behaviour_section", "add_timings", "honesty_report"),
    ".tables": ("markdown_table", "write_table"),
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
