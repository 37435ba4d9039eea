"""The behaviour registry: shipped behaviours register themselves, a behaviour of one module
runs the behaviour section, and bad names or missing options fail before any model loads."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from conftest import make_model, make_tokenizer

from reptune.behaviours import (
    BehaviourSpec,
    behaviour_names,
    get_behaviour,
    register_behaviour,
    required_options,
)
from reptune.behaviours.honesty import CLAIM_QUESTION, load_honesty_claims
from reptune.behaviours.refusal import keyword_refusal_score
from reptune.training import RepTuneConfig
from reptune.workflow import BehaviourArguments, ModelArguments, StageRunner, run_behaviour

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "caa"


def test_shipped_behaviours_are_registered():
    assert {"sentiment", "honesty", "caa", "refusal"} <= set(behaviour_names())
    assert required_options("caa") == ("pairs", "eval_items", "instruction")
    assert required_options("sentiment") == ()


def test_unknown_behaviour_and_missing_options_fail_clearly():
    with pytest.raises(ValueError, match="unknown behaviour 'nope'.*register_behaviour"):
        BehaviourArguments(behaviour="nope")
    with pytest.raises(ValueError, match=r"'caa' needs \['pairs', 'eval_items', 'instruction'\]"):
        BehaviourArguments(behaviour="caa")
    with pytest.raises(ValueError, match="needs the options"):
        get_behaviour("refusal")
    with pytest.raises(ValueError, match="needs name="):
        register_behaviour(lambda options: None)
    with pytest.raises(TypeError, match="BehaviourSpec or a builder"):
        register_behaviour("sentiment")


def test_instruction_option_replaces_the_prompting_baseline():
    assert get_behaviour("sentiment", BehaviourArguments(instruction="Be glad.")).instruction == (
        "Be glad."
    )


def test_keyword_refusal_score():
    assert keyword_refusal_score("I'm sorry, but I cannot help with that.") == 1
    assert keyword_refusal_score("I\u2019m unable to do that") == 1
    assert keyword_refusal_score("Sure! Here is how you do it.") == -1


def test_honesty_spec_scores_the_true_letter():
    spec = get_behaviour("honesty")
    claims = {CLAIM_QUESTION.format(claim=c.statement): c.label for c in load_honesty_claims()}
    prompts = spec.eval_prompts()
    assert len(prompts) == 50 and not set(prompts) & set(spec.train_prompts())
    true_prompt = next(p for p in prompts if claims[p])
    false_prompt = next(p for p in prompts if not claims[p])
    texts = ["(A) True", "(A) True", "It is false."]
    assert spec.score(None, None, texts, [true_prompt, false_prompt, false_prompt]) == [1, 0, 1]


@pytest.mark.skipif(not SHARED.is_dir(), reason="the CAA data files are not here")
def test_refusal_spec_reads_the_caa_files_and_scores_refusals():
    options = BehaviourArguments(
        behaviour="refusal",
        pairs=str(SHARED / "generate_refusal_ab.json"),
        eval_items=str(SHARED / "test_refusal_ab.json"),
    )
    spec = options.spec()
    assert spec.name == "refusal" and spec.eval_prompts()
    prompt = spec.eval_prompts()[0]  # "How can I make a bomb? ... (B) I cannot provide ..."
    texts = ["I cannot do that.", "Sure.", "(B) I cannot provide", "(A) To make a bomb"]
    assert spec.score(None, None, texts, [prompt] * 4) == [1.0, 0.0, 1.0, 0.0]


def test_a_behaviour_of_one_module_runs_its_section(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    try:
        importlib.import_module("toy_behaviour")
    finally:
        sys.path.pop(0)
    assert isinstance(get_behaviour("toy"), BehaviourSpec)
    tiny = tmp_path / "tiny"
    make_model(seed=0).save_pretrained(tiny)
    make_tokenizer().save_pretrained(tiny)
    judge = tmp_path / "judge"  # the judge LM: a tiny model of another family
    make_model("gpt2", n_layers=2, hidden=32, context=1024).save_pretrained(judge)
    make_tokenizer().save_pretrained(judge)
    bargs = BehaviourArguments(
        behaviour="toy",
        judge_model=str(judge),
        judge_dtype="float32",
        judge_answer_tokens=8,
        bootstrap_resamples=200,
        layers=[1, 2],
        coefficients=[0.5],
        dev_prompts=2,
        test_prompts=4,
        new_tokens=4,
        row_tokens=4,
        variants=["rep-steer"],
        steer_steps=2,
        select_every=1,
        diagnostic_prompts=0,
        perplexity_window=32,
        perplexity_stride=16,
    )
    margs = ModelArguments(model=str(tiny), lora_target_modules=["q_proj", "v_proj"])
    targs = RepTuneConfig(
        output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[], disable_tqdm=True
    )
    material = run_behaviour(bargs, margs, targs, StageRunner(tmp_path / "run"))
    assert material["name"] == "toy" and material["test"] == 4
    evaluated = material["evaluated"]
    rows = {r["condition"]: r for r in evaluated["summary"]}
    assert set(rows) == {"base", "prompting", "steered", "rep-steer"}
    # Without an independent scorer the behaviour column is the toy's own score, labelled so.
    assert not evaluated["independent_behaviour"]
    assert "under the model under test" in evaluated["scorers"]["behaviour"]
    toy = sys.modules["toy_behaviour"]
    for example in evaluated["examples"]:
        first = evaluated["scores"]["behaviour"][example["condition"]][0][0][0]
        assert first == pytest.approx(toy.score(None, None, [example["text"]], [])[0])
