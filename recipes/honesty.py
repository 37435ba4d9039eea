"""The honesty recipe: claims -> pairs -> vectors -> layers and coefficient chosen on dev claims
-> representation tuning (honest / dishonest) and token-only baselines (truth / lie) -> A/B
evaluation on test claims, robustness, perplexity, trade-off -> an optional behaviour section
(tuned models against prompting, steering and SFT) -> report -> model card -> optional Hub push.

    accelerate launch recipes/honesty.py --config recipes/honesty/smollm2-135m.yaml
    python recipes/honesty.py --config recipes/honesty/llama2-13b-chat.yaml --num_train_epochs 1

Every stage writes under ``run_dir`` and is skipped on a rerun when it already finished with the
same settings. Settings come from the YAML file; any ``--option value`` overrides it. The
stages are library code (:mod:`reptune.workflow`); this script only wires them together.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from reptune.commands import parse
from reptune.publish import publish_run
from reptune.reporting.run_report import add_behaviour_section, add_timings, honesty_report
from reptune.training import RepTuneConfig, check_precision
from reptune.training.launch import use_all_cores
from reptune.workflow import (
    HonestyArguments,
    ModelArguments,
    RunArguments,
    StageRunner,
    run_behaviour,
    run_honesty,
)
from reptune.workflow.layout import write_run_config


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    margs, rargs, hargs, targs = parse(
        (ModelArguments, RunArguments, HonestyArguments, RepTuneConfig), argv, "honesty.py"
    )
    check_precision(targs, argv, margs.dtype, full_weights=margs.finetune != "lora")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_all_cores()
    # Everything checkable is checked before a model loads.
    behaviour = hargs.behaviour_arguments()
    missing = [f for f in hargs.input_files() if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"input file {missing[0]} does not exist (check the config)")
    hargs.check_counts(targs.seed)  # limits and splits deliver what they ask, or stop here

    stages = StageRunner(rargs.run_dir)
    results = run_honesty(hargs, margs, targs, stages)
    report = honesty_report(results, hargs, margs, stages)
    if behaviour is not None:
        add_behaviour_section(report, run_behaviour(behaviour, margs, targs, stages))
    add_timings(report, stages)
    if stages.state.is_main_process:
        # The report and card are cheap: rewritten on every run so they show this run's timings.
        report.write(stages.layout.report_dir)
        write_run_config(stages.layout, dataset=hargs.claims, base_model=margs.model)
    card = publish_run(rargs.run_dir, rargs.push_to_hub_repo, private=rargs.push_private)
    print(f"report: {stages.layout.report_dir / 'report.md'}")
    print(f"model card: {card}")
    stages.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, TypeError) as err:
        # Bad input: one line with the reason.
        sys.exit(f"{Path(__file__).name}: error: {err}")
