"""A behaviour the model represents, measured as steering benchmarks do: vectors -> layer and
coefficient chosen on dev prompts -> answers written by the steered model -> token-level SFT,
cosine rep-tuning and steer-objective rep-tuning (checkpoints chosen on dev) -> base, prompting,
steering and the three tuned models scored on test prompts (behaviour, fluency, relevance,
harmonic mean; perplexity; KL to the steered model) -> report -> model card.

    python recipes/behaviour.py --config recipes/behaviour/sentiment-smollm2-135m.yaml

The honesty recipe runs the same stages as its second section (``behaviour_section``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from reptune.commands import parse
from reptune.publish import publish_run
from reptune.reporting.report import Report
from reptune.reporting.run_report import add_behaviour_section, add_timings
from reptune.training import RepTuneConfig, check_precision
from reptune.training.launch import use_all_cores
from reptune.workflow import (
    BehaviourArguments,
    ModelArguments,
    RunArguments,
    StageRunner,
    run_behaviour,
)
from reptune.workflow.layout import write_run_config


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    margs, rargs, bargs, targs = parse(
        (ModelArguments, RunArguments, BehaviourArguments, RepTuneConfig), argv, "behaviour.py"
    )
    check_precision(targs, argv, margs.dtype, full_weights=margs.finetune != "lora")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_all_cores()
    stages = StageRunner(rargs.run_dir)
    results = run_behaviour(bargs, margs, targs, stages)
    report = Report(f"Behaviour: {bargs.behaviour}", model={"spec": margs.model})
    add_behaviour_section(report, results)
    add_timings(report, stages)
    layout = stages.layout
    if stages.state.is_main_process:
        report.write(layout.report_dir)
        # The published model of a behaviour run is its steer-objective model, with the
        # section's vectors as the run's vectors.
        section = results["layout"]
        published = section.model_dir("rep-steer")
        if published.is_dir():
            write_run_config(
                layout, source=published, dataset=bargs.behaviour, base_model=margs.model
            )
        _link(section.vectors_dir, layout.vectors_dir)
        _link(published, layout.adapter_dir)
    card = publish_run(rargs.run_dir, rargs.push_to_hub_repo, private=rargs.push_private)
    print(f"report: {layout.report_dir / 'report.md'}")
    print(f"model card: {card}")
    stages.close()
    return 0


def _link(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` (folder-atomic; nothing when it is missing)."""
    import shutil

    from reptune.io import atomic_folder

    if source.is_dir():
        with atomic_folder(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, TypeError) as err:
        # Bad input: one line with the reason.
        sys.exit(f"{Path(__file__).name}: error: {err}")
