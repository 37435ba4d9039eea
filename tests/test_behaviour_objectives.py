"""The behaviour section's further objectives (prompt target, learned vectors) and its
robustness study, on tiny models built from a config."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.evaluation.ab.scoring import generate_texts
from reptune.extract import measure_residual_norms
from reptune.io import read_jsonl
from reptune.pairs import format_chat
from reptune.reporting import Report
from reptune.reporting.behaviour_report import choice_sentences
from reptune.reporting.objectives_view import _prompt_lines, prompt_target_rows
from reptune.reporting.robustness_view import plot_behaviour_robustness, robustness_table_rows
from reptune.reporting.run_report import add_behaviour_section
from reptune.reporting.tables import markdown_table
from reptune.steering import SteeredModel
from reptune.tokenization import adds_bos
from reptune.training import RepTuneConfig
from reptune.vectors import SteeringVectors
from reptune.workflow import BehaviourArguments, ModelArguments, StageRunner, run_behaviour
from reptune.workflow import behaviour_objectives as objectives
from reptune.workflow.behaviour_robustness import Condition, robustness_rows, robustness_study
from reptune.workflow.measure import generate_condition
from reptune.workflow.variants import load_variant, prompted_rows


def _a_share(prompts, answers):
    """Stub behaviour: the share of characters that are 'a'."""
    return [t.count("a") / max(1, len(t)) for t in answers]


def _vectors(model, tok, layers=(1, 2)):
    gen = torch.Generator().manual_seed(3)
    norms = measure_residual_norms(model, tok, ["hello there", "a fox"], list(layers))
    meta = SteeringVectors.describe_model(model) | {"residual_norms": norms}
    return SteeringVectors({k: torch.randn(32, generator=gen) for k in layers}, meta)


def test_robustness_rows_equal_a_hand_computation():
    base, unattacked, attacked = [0.1, 0.2, 0.0, 0.3], [0.5, 0.6, 0.4, 0.9], [0.3, 0.4, 0.1, 0.6]
    records = [
        {"condition": "base", "attack": "none", "strength": 0.0, "scores": base},
        {"condition": "tuned", "attack": "none", "strength": 0.0, "scores": unattacked},
        {"condition": "tuned", "attack": "vector", "strength": 0.2, "scores": attacked},
    ]
    rows = robustness_rows(records, "base", n_resamples=999)
    row = next(r for r in rows if r["attack"] == "vector")
    assert row["behaviour"] == pytest.approx(np.mean(attacked))
    assert row["shift"]["difference"] == pytest.approx(np.mean(attacked) - np.mean(base))
    assert row["drop"]["difference"] == pytest.approx(np.mean(attacked) - np.mean(unattacked))
    kept = (np.mean(attacked) - np.mean(base)) / (np.mean(unattacked) - np.mean(base))
    assert row["kept"]["value"] == pytest.approx(kept)
    assert row["kept"]["low"] <= kept <= row["kept"]["high"]
    unattacked_row = next(r for r in rows if r["attack"] == "none")
    assert unattacked_row["kept"]["value"] == pytest.approx(1.0)
    assert {r["condition"] for r in rows} == {"tuned"}  # the reference is not a row
    with pytest.raises(ValueError, match="reference"):
        robustness_rows(records[1:], "base")


def test_robustness_study_attacks_each_condition_as_described(tmp_path):
    model, tok = make_model(seed=0), make_tokenizer()
    vecs = _vectors(model, tok)
    prompts = ["Tell me about a cat.", "Describe a day.", "What is a fox?"]
    c, a = 0.8, 0.5
    conditions = {
        "base": Condition(model),
        "steered": Condition(model, offset={1: c * vecs.direction(1)}),
        "prompting": Condition(model, system="Be glad."),
    }
    attacks = {"vector": {1: vecs.direction(1)}}
    study = robustness_study(conditions, "base", tok, prompts, attacks, [a], _a_share, new_tokens=5)
    by = {(r["condition"], r["attack"]): r for r in study["scores"]}
    assert set(by) == {
        ("base", "none"), ("steered", "none"), ("steered", "vector"),
        ("prompting", "none"), ("prompting", "vector"),
    }  # fmt: skip
    # The steered model with the opposite coefficient added is the steered model at c - a.
    net = generate_condition(
        SteeredModel(model, vecs, layers=[1]), tok, prompts, coefficient=c - a, new_tokens=5
    )
    assert by[("steered", "vector")]["answers"] == net
    # The prompted model under attack: the system prompt and -a * v together.
    attacked = generate_condition(
        SteeredModel(model, vecs, layers=[1]), tok, prompts, coefficient=-a,
        system="Be glad.", new_tokens=5,
    )  # fmt: skip
    assert by[("prompting", "vector")]["answers"] == attacked
    for record in study["scores"]:  # every score is the stub's count on the recorded answer
        assert record["scores"] == _a_share(prompts, record["answers"])
    rows = robustness_rows(study["scores"], "base", n_resamples=199)
    assert plot_behaviour_robustness(rows, tmp_path / "robustness.png").is_file()
    assert "| steered | vector | 0.5 |" in markdown_table(robustness_table_rows(rows))
    with pytest.raises(ValueError, match="strengths"):
        robustness_study(conditions, "base", tok, prompts, attacks, [-a], _a_share)


def _toy_section(tmp_path, **overrides):
    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    try:
        importlib.import_module("toy_behaviour")
    finally:
        sys.path.pop(0)
    tiny, judge = tmp_path / "tiny", tmp_path / "judge"
    if not tiny.exists():
        make_model(seed=0).save_pretrained(tiny)
        make_tokenizer().save_pretrained(tiny)
        make_model("gpt2", n_layers=2, hidden=32, context=1024).save_pretrained(judge)
        make_tokenizer(pad=True).save_pretrained(judge)
    settings = dict(
        judge_model=str(judge), judge_dtype="float32", judge_answer_tokens=8, relevance_others=1,
        bootstrap_resamples=200,
        behaviour="toy", layers=[1, 2], coefficients=[0.5, 1.0], dev_prompts=2, test_prompts=4,
        new_tokens=4, row_tokens=4, variants=["rep-prompt"], prompt_steps=2, select_every=1,
        diagnostic_prompts=0, perplexity_window=32, perplexity_stride=16,
        learned_objectives=["lm", "preference"], learned_steps=2,
        robustness_multiples=[1.0], robustness_prompts=3,
    )  # fmt: skip
    bargs = BehaviourArguments(**(settings | overrides))
    margs = ModelArguments(model=str(tiny), lora_target_modules=["q_proj", "v_proj"])
    targs = RepTuneConfig(
        output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[], disable_tqdm=True
    )
    return bargs, margs, targs


def _prompt_kl_by_hand(base, tuned, tok, prompts, new_tokens):
    """Mean over prompts of the per-token KL(base with "Be cheerful." || tuned without it)
    along base's greedy answer with the instruction, one prompt at a time, unpadded."""
    values = []
    for prompt in prompts:
        instructed = format_chat(tok, prompt, "", "Be cheerful.")
        answer = generate_texts(base, tok, [instructed], max_new_tokens=new_tokens)[0]
        more = tok(answer, add_special_tokens=False)["input_ids"]
        logs = []
        for model, chat in ((base, instructed), (tuned, format_chat(tok, prompt))):
            head = tok(chat, add_special_tokens=adds_bos(tok, chat))["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([head + more])).logits[0]
            logs.append(logits.log_softmax(-1)[len(head) - 1 : len(head) - 1 + len(more)])
        p, q = logs
        values.append(float((p.exp() * (p - q)).sum(-1).mean()) if more else 0.0)
    return sum(values) / len(values)


def test_new_conditions_run_end_to_end_and_resume(tmp_path, monkeypatch):
    bargs, margs, targs = _toy_section(tmp_path)
    material = run_behaviour(bargs, margs, targs, StageRunner(tmp_path / "run"))
    evaluated = material["evaluated"]
    quality = {r["condition"] for r in evaluated["summary"]}
    assert quality == {"base", "prompting", "steered", "rep-prompt", "learned-lm", "learned-pref"}
    # The learned vectors are conditions like any other: paired against base and steered.
    compared = {(r["condition"], r["reference"]) for r in evaluated["comparisons"]}
    assert {("learned-lm", "base"), ("learned-pref", "steered")} <= compared
    layout = material["layout"]
    # The rows are the prompted model's greedy answers (the instruction in the system prompt).
    model, tok = margs.load()
    toy = sys.modules["toy_behaviour"]
    expected = prompted_rows(model, tok, toy.PROMPTS[:6], "Be cheerful.", max_new_tokens=4)
    assert read_jsonl(layout.data_file("prompted_rows.jsonl")) == expected
    # The prompt variant's checkpoint is chosen on dev by its fidelity to the prompted model:
    # the lowest KL(prompted base || tuned without the prompt) along the prompted dev answers.
    trained = material["trained"]["rep-prompt"]
    chosen, steps = trained["chosen"], trained["checkpoints"][trained["chosen"]["name"]]
    assert trained["criterion"] == "fidelity" and set(steps) == {1, 2}
    assert chosen["step"] == max(steps, key=lambda s: (steps[s], -s))
    tuned, _ = load_variant(margs, layout.model_dir("rep-prompt"))
    assert -chosen["dev_score"] == pytest.approx(
        _prompt_kl_by_hand(model, tuned, tok, toy.PROMPTS[6:8], bargs.new_tokens), rel=1e-4
    )
    base_kl = _prompt_kl_by_hand(model, model, tok, toy.PROMPTS[6:8], bargs.new_tokens)
    assert -trained["base_dev_score"] == pytest.approx(base_kl, rel=1e-4) and base_kl > 0
    sentence = choice_sentences(material)[2]
    assert "lowest dev next-token KL(prompted base || tuned" in sentence
    assert f"the base model without the prompt: {base_kl:.3f})" in sentence
    learned = {n: SteeringVectors.load(layout.model_dir(n)) for n in ("learned-lm", "learned-pref")}
    assert learned["learned-pref"].metadata["objective"] == "preference"
    assert learned["learned-lm"].layers == [material["chosen"]["layer"]]
    # The matched-fluency coefficient is the dev coefficient closest in fluency to mean-diff's.
    choices, matched = material["learned_choices"], material["learned_matched"]
    for name in learned:
        rows, target = choices[name]["rows"], choices["mean_diff_fluency"]
        assert [r["coefficient"] for r in rows] == [0.5, 1.0]
        best = min(rows, key=lambda r: (abs(r["fluency"] - target), abs(r["coefficient"])))
        assert matched[name]["coefficient"] == best["coefficient"]
        assert matched[name]["behaviour_vs_mean_diff"]["n_prompts"] == 4
    robust = material["robustness"]
    names = {r["condition"] for r in robust["rows"]}
    assert names == {"prompting", "steered", "rep-prompt", "learned-lm", "learned-pref"}
    assert set(robust["attacks"]) == {"vector", "two-layer"} and robust["prompts"] == 3
    # The report: the prompt-target share is the hand ratio of mean shifts over base.
    report = Report("t")
    add_behaviour_section(report, material)
    titles = {sec.title for sec in report.sections}
    assert {"toy: robustness", "toy: learned vectors at matched fluency"} <= titles
    per = {c: np.mean(t) for c, t in evaluated["scores"]["behaviour"].items()}
    row = prompt_target_rows(evaluated, ["rep-prompt"])[0]
    hand = (per["rep-prompt"] - per["base"]) / (per["prompting"] - per["base"])
    assert row["share"] == pytest.approx(hand, nan_ok=True)
    reach = row["behaviour_minus_fraction"]
    hand = per["rep-prompt"] - (per["base"] + 0.9 * (per["prompting"] - per["base"]))
    assert reach["difference"] == pytest.approx(hand) and reach["low"] <= hand <= reach["high"]
    text = "\n".join(_prompt_lines([row]))
    assert "of prompting's shift, paired: " in text and "90% of prompting's shift" in text
    harmonic = evaluated["scores"]["harmonic"]
    hand = np.mean(harmonic["rep-prompt"]) - np.mean(harmonic["prompting"])
    assert row["harmonic_minus_prompting"]["difference"] == pytest.approx(hand)
    # Matched fluency is paired against the evaluation's own steered greedy answers.
    assert matched["mean_diff"]["behaviour"] == pytest.approx(
        np.mean([r[0][0] for r in evaluated["scores"]["behaviour"]["steered"]])
    )
    # Resume: a second run reads every stage back and writes no row again.
    monkeypatch.setattr(objectives, "prompted_rows", lambda *a, **k: pytest.fail("rewritten"))
    monkeypatch.setattr(objectives, "learn_vectors", lambda *a, **k: pytest.fail("relearned"))
    again = run_behaviour(bargs, margs, targs, StageRunner(tmp_path / "run"))
    assert again["robustness"]["rows"] == robust["rows"]
    assert again["learned_matched"] == matched


def test_bad_objective_settings_fail_clearly():
    with pytest.raises(ValueError, match="learned_objectives"):
        BehaviourArguments(behaviour="sentiment", learned_objectives=["dpo"])
    with pytest.raises(ValueError, match="robustness_multiples"):
        BehaviourArguments(behaviour="sentiment", robustness_multiples=[-1.0])
    with pytest.raises(ValueError, match="variants"):
        BehaviourArguments(behaviour="sentiment", variants=["rep-prompt-x"])
    with pytest.raises(ValueError, match=r"prompt_layer 7, .* add it to layers"):
        BehaviourArguments(
            behaviour="sentiment", layers=[2, 3], prompt_layer=7, variants=["rep-prompt+steer"]
        )


def test_the_prompt_target_reads_the_chosen_wording_as_prompting_does():
    """For every shipped sentiment wording (system prompt, user-turn template, few-shot), the
    prompt target's context is the very text the prompting baseline answers."""
    from reptune.behaviours.sentiment_prompts import (
        InstructionCandidate,
        load_instruction_candidates,
    )
    from reptune.training.prompt_target import instructed_chat

    tok = make_tokenizer()
    prompt = "Describe a walk through the old market."
    modes = set()
    for wording in load_instruction_candidates().values():
        settings = objectives.prompt_target_settings(wording)
        modes.add((settings["target_instruction_mode"], bool(settings["target_examples"])))
        chat = instructed_chat(
            tok,
            prompt,
            settings["target_instruction"],
            settings["target_instruction_mode"],
            examples=settings["target_examples"] or (),
        )
        assert chat == wording.format(tok, prompt), wording.name
    assert modes == {("system", False), ("template", False), ("system", True)}
    both = InstructionCandidate("both", "Be warm.", "{prompt} Please.")
    with pytest.raises(ValueError, match="both a system prompt and a user template"):
        objectives.prompt_target_settings(both)


def test_section_without_references_or_self_judge_still_reports(tmp_path):
    """reference_prompts=0 skips KL and cosines, self_judge=False drops its column, and the
    report renders without them."""
    bargs, margs, targs = _toy_section(
        tmp_path, reference_prompts=0, self_judge=False, eval_batch_size=3,
        learned_objectives=[], robustness_multiples=[],
    )  # fmt: skip
    material = run_behaviour(bargs, margs, targs, StageRunner(tmp_path / "run"))
    evaluated = material["evaluated"]
    assert evaluated["kl"] == {} and evaluated["cosines"] == {}
    assert evaluated["reference_prompts"] == 0
    assert "self_judge" not in evaluated["scores"] and "self_judge" not in evaluated["scorers"]
    assert {r["model"] for r in evaluated["perplexity"]} >= {"base", "steered"}
    report = Report("t")
    add_behaviour_section(report, material)
    assert report.sections


def test_tuned_models_against_prompting_are_paired_and_holm_corrected():
    from reptune.evaluation.stats import holm
    from reptune.reporting.objectives_view import _against_prompting_line, tuned_vs_prompting_rows

    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.3, size=40)

    def table(shift):  # (prompts, seeds, answers)
        return [[[float(v + shift)]] for v in base + rng.normal(0, 0.01, size=40)]

    ev = {
        "scores": {"harmonic": {"prompting": table(0.0), "big": table(0.05),
                                "flat": table(0.0), "steered": table(0.1)}},
        "conditions": {"prompting": {"kind": "prompting"}, "big": {"kind": "tuned"},
                       "flat": {"kind": "tuned"}, "steered": {"kind": "steered"}},
    }  # fmt: skip
    rows = tuned_vs_prompting_rows(ev)
    assert [r["condition"] for r in rows] == ["big", "flat"]  # tuned models only
    h = ev["scores"]["harmonic"]
    for r in rows:
        hand = np.mean(np.ravel(h[r["condition"]])) - np.mean(np.ravel(h["prompting"]))
        assert r["difference"] == pytest.approx(hand)
    adjusted = holm([r["p_value"] for r in rows])
    assert [r["p_holm"] for r in rows] == [a.p_adjusted for a in adjusted]
    assert [r["above"] for r in rows] == [True, False]
    line = _against_prompting_line(rows)
    assert line.startswith("Tuned models") and "big +0.0" in line and "(Holm p" in line
    assert "Not shown: flat" in line
    assert _against_prompting_line(rows[1:]).startswith("No tuned model")
