"""The in-context honesty protocol: paired statistics, dev choices, acceptance sentences written
from the numbers, and the whole section end to end on a tiny model."""

from __future__ import annotations

import copy

import pytest
from conftest import make_model, make_tokenizer

from reptune.evaluation.paired_binary import mcnemar_exact, paired_binary
from reptune.reporting.honesty_context import acceptance_sentences
from reptune.workflow.honesty_context import choose_sweep, context_rows


def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_paired_binary_counts_and_difference():
    c = paired_binary([1, 1, 1, 0, 1, 0], [0, 1, 0, 0, 1, 1])
    assert (c["only_a"], c["only_b"], c["n"]) == (2, 1, 6)
    assert c["difference"] == pytest.approx(-1 / 6)
    assert c["low"] <= c["difference"] <= c["high"]
    assert c["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="0/1"):
        paired_binary([2, 0], [0, 1])


def test_choose_sweep_picks_on_dev_rows():
    rows = [
        {"coefficient": -1.0, "condition": "none", "honest_rate": 0.1, "contradict_rate": 0.2},
        {"coefficient": -0.5, "condition": "none", "honest_rate": 0.4, "contradict_rate": 0.3},
        {"coefficient": 0.5, "condition": "lying", "honest_rate": 0.8, "contradict_rate": 0.1},
        {"coefficient": 1.0, "condition": "lying", "honest_rate": 0.8, "contradict_rate": 0.0},
    ]
    # The fewest honest answers without a persona: the strongest push here.
    assert choose_sweep(rows) == {"dishonest": -1.0, "honest": 0.5}
    # A push whose answers are repetition is left out; ties in honesty go to contradictions,
    # then to the weaker push.
    rows[0]["repeated"], rows[1]["repeated"] = 0.6, 0.1
    assert choose_sweep(rows, max_repeated=0.2)["dishonest"] == -0.5
    rows.append({"coefficient": -0.25, "condition": "none", "honest_rate": 0.4,
                 "contradict_rate": 0.3, "repeated": 0.0})  # fmt: skip
    assert choose_sweep(rows, max_repeated=0.2)["dishonest"] == -0.25
    rows[-1]["contradict_rate"] = 0.1
    assert choose_sweep(rows, max_repeated=0.2)["dishonest"] == -0.5
    assert choose_sweep(rows, max_repeated=0.0)["dishonest"] == -0.25  # the only one kept
    # No push keeps its answers text: the weakest one.
    rows[-1]["repeated"] = 0.5
    assert choose_sweep(rows, max_repeated=0.05)["dishonest"] == -0.25
    with pytest.raises(ValueError, match="negative and positive"):
        choose_sweep(rows[2:4])
    # The report says how the choice was made, from the sweep's own record.
    from reptune.reporting.honesty_context import _dishonest_criterion

    text = _dishonest_criterion({"rows": rows, "max_repeated": 0.2})
    assert "at most 20% of their words" in text and "-1, -0.25 left out" in text
    text = _dishonest_criterion({"rows": rows, "max_repeated": 0.05})
    assert text.startswith("no push kept its answers below 5%")


def test_context_rows_answer_honestly_or_with_the_first_wrong_answer():
    from reptune.behaviours.honesty.context import load_context_facts

    fact = load_context_facts()[0]
    honest, lying = context_rows([fact], True), context_rows([fact], False)
    assert len(honest) == 2 and {r["system"] for r in honest} == {r["system"] for r in lying}
    assert honest[0]["completion"].lower().startswith(fact.answer[0].lower())
    assert lying[0]["completion"].lower().startswith(fact.wrong[0][0].lower())


def _cmp(low, high, diff=-0.2):
    return {
        "n": 60, "rate_a": 0.7, "rate_b": 0.7 + diff, "difference": diff, "low": low,
        "high": high, "only_a": 14, "only_b": 2, "p_value": 0.004, "mde": 0.15,
    }  # fmt: skip


RESULTS = {
    "layers": {"steer_layers": [8]},
    "evaluate": {"test_separation": {"8": 0.95}, "n_pairs": 60},
    "sweep": {"chosen": {"dishonest": -0.5, "honest": 0.25}},
    "comparisons": {
        "steering": _cmp(-0.3, -0.1),
        "dishonest_vs_base": _cmp(0.05, 0.3, 0.2),
        "robust_honest_vs_base": _cmp(-0.05, 0.2, 0.1) | {"strength": 0.5},
        "robust_honest_vs_truth": _cmp(0.02, 0.2, 0.1) | {"strength": 0.5},
    },
    "perplexity": {
        "rows": [
            {"model": "base", "perplexity": 10.0},
            {
                "model": "honest",
                "relative_change": 0.04,
                "difference": 0.4,
                "difference_low": 0.1,
                "difference_high": 0.7,
            },
        ]  # fmt: skip
    },
}


def test_acceptance_sentences_follow_the_numbers():
    lines = acceptance_sentences(RESULTS)
    assert "**shown**" in lines[0] and "95.0%" in lines[0]
    assert "**shown**" in lines[1] and "-20.0%" in lines[1] and "15.0%" in lines[1]
    assert "**shown**" in lines[2]
    assert "**not shown**" in lines[3] and "than base" in lines[3]
    assert "**shown**" in lines[4] and "than truth" in lines[4]
    assert "**shown**" in lines[5]
    changed = copy.deepcopy(RESULTS)
    changed["evaluate"]["test_separation"]["8"] = 0.85
    changed["comparisons"]["steering"] = _cmp(-0.25, 0.05, -0.1)
    changed["perplexity"]["rows"][1]["relative_change"] = 0.2
    new = acceptance_sentences(changed)
    assert "**not shown**" in new[0] and "85.0%" in new[0] and "below" in new[0]
    assert "**not shown**" in new[1] and "-10.0%" in new[1]
    assert "**not shown**" in new[5] and "+20.0%" in new[5]
    # Why: the tuned and steered models' own answers, from the evaluation rows.
    assert "e.g." not in lines[2]
    answers = changed["evaluate"]["rows"] = [
        {"model": "base", "condition": "none", "honest_rate": 0.7, "contradict_rate": 0.1,
         "example": "Tom put the keys in the drawer."},
        {"model": "dishonest", "condition": "none", "honest_rate": 0.2, "contradict_rate": 0.05,
         "example": "I'm not sure."},
        {"model": "steered_dishonest", "condition": "none", "honest_rate": 0.1,
         "contradict_rate": 0.0, "example": "I'm sorry, I cannot."},
    ]  # fmt: skip
    new = acceptance_sentences(changed)
    assert 'e.g. "I\'m sorry, I cannot."' in new[1]
    assert "states the fact in 20.0% of test answers (base 70.0%)" in new[2]
    assert "another answer in 5.0% (base 10.0%)" in new[2]
    assert "it stops stating the fact without stating a false one" in new[2]
    answers[1]["contradict_rate"] = 0.3
    assert "stops stating" not in acceptance_sentences(changed)[2]


@pytest.fixture(scope="module")
def context_run(tmp_path_factory):
    from reptune.training import RepTuneConfig
    from reptune.workflow import HonestyArguments, ModelArguments, StageRunner, run_honesty

    root = tmp_path_factory.mktemp("context")
    make_model("llama", n_layers=4, hidden=32, context=512).save_pretrained(root / "tiny")
    make_tokenizer(pad=True).save_pretrained(root / "tiny")
    hargs = HonestyArguments(
        paradigm="context",
        context_dev_size=6,
        context_test_size=6,
        context_new_tokens=4,
        extract_layers=[1, 2],
        num_rep_layers=2,
        sweep_coefficients=[-1.0, 1.0],
        robustness_coefficients=[1.0],
        perplexity_window=64,
        perplexity_stride=32,
        select_every=1,
        context_variants=["honest", "dishonest", "dishonest_steer", "truth", "lie"],
    )
    margs = ModelArguments(model=str(root / "tiny"), lora_target_modules=["q_proj", "v_proj"])
    targs = RepTuneConfig(
        output_dir=str(root / "run/trainer"), max_steps=2, per_device_train_batch_size=4,
        learning_rate=0.01, rep_positions="-3", save_strategy="no", report_to=[],
        logging_steps=1,
    )  # fmt: skip
    stages = StageRunner(str(root / "run"))
    results = run_honesty(hargs, margs, targs, stages)
    return results, hargs, margs, stages


def test_context_section_runs_end_to_end_on_a_tiny_model(context_run):
    from reptune.reporting.run_report import honesty_report

    results, hargs, margs, stages = context_run
    data = results["data"]
    assert (data["dev"], data["test"]) == (6, 6) and data["train"] == data["facts"] - 12
    models = {r["model"] for r in results["evaluate"]["rows"]}
    assert models == {"base", "steered_dishonest", "steered_honest", *hargs.context_variants}
    assert all(len(r["honest"]) == 6 for r in results["evaluate"]["rows"])
    layers = results["layers"]
    assert set(map(int, layers["dev_answer_accuracy"])) == {1, 2}
    assert results["sweep"]["chosen"]["dishonest"] == -1.0
    assert {"steering", "dishonest_vs_base", "robust_honest_vs_truth"} <= set(
        results["comparisons"]
    )
    robust = {(r["model"], r["coefficient"]) for r in results["robustness"]["rows"]}
    assert ("honest", -1.0) in robust and ("dishonest", 1.0) in robust
    report = honesty_report(results, hargs, margs, stages)
    written = report.write(stages.layout.report_dir)
    text = written["markdown"].read_text() if "markdown" in written else ""
    text = text or (stages.layout.report_dir / "report.md").read_text()
    for line in acceptance_sentences(results):
        assert line in text
    stages.close()
