"""The behaviour section end to end on tiny models: a tiny Llama under test, a tiny GPT-2 as the
judge LM (another family, built from a config), VADER as the behaviour scorer; choices made by
the reported criterion; the report's sentences read from the stage files."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune.behaviours import get_behaviour
from reptune.evaluation.open_ended.quality import harmonic_mean
from reptune.reporting.behaviour_report import choice_sentences, comparison_sentences
from reptune.reporting.report import Report
from reptune.reporting.run_report import add_behaviour_section
from reptune.training import RepTuneConfig
from reptune.workflow import BehaviourArguments, ModelArguments, StageRunner, run_behaviour
from reptune.workflow.behaviour_scoring import COLUMNS, SectionScorers, headline_axes
from reptune.workflow.behaviour_tuning import PLACEMENTS, VARIANTS


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny Llama (under test) and a tiny GPT-2 (the judge), saved as folders."""
    root = tmp_path_factory.mktemp("section")
    make_model("llama", n_layers=4, hidden=32, context=2048).save_pretrained(root / "tiny")
    make_tokenizer(pad=True).save_pretrained(root / "tiny")
    make_model("gpt2", n_layers=2, hidden=32, context=1024).save_pretrained(root / "judge")
    make_tokenizer(pad=True).save_pretrained(root / "judge")
    return root


def _args(models, tmp_path, **extra):
    margs = ModelArguments(model=str(models / "tiny"), lora_target_modules=["q_proj", "v_proj"])
    targs = RepTuneConfig(
        output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[], disable_tqdm=True
    )
    options = dict(
        behaviour="sentiment",
        judge_model=str(models / "judge"),
        judge_dtype="float32",
        judge_answer_tokens=8,
        relevance_others=1,
        layers=[1, 2],
        steer_layers=[1, 2],
        coefficients=[0.5, 1.0],
        dev_prompts=3,
        test_prompts=4,
        new_tokens=4,
        train_prompts=6,
        row_tokens=4,
        variants=["token-sft", "rep-steer"],
        sft_steps=2,
        steer_steps=2,
        select_every=1,
        instructions=["warm-tone", "few-shot"],
        diagnostic_prompts=0,
        bootstrap_resamples=200,
        perplexity_window=32,
        perplexity_stride=16,
    )
    return BehaviourArguments(**(options | extra)), margs, targs


def _stage(stages: StageRunner, name: str):
    return json.loads(stages.marker(name).read_text())["result"]


def test_headline_keeps_only_agreeing_scorers():
    rows = [
        {"column": "behaviour", "set": "s", "passes": True},
        {"column": "fluency", "set": "f", "passes": False},
        {"column": "relevance", "set": None},  # no labels: kept, reported as not validated
    ]
    assert headline_axes(rows) == ("behaviour", "relevance")
    with pytest.raises(ValueError, match="no scorer agrees"):
        headline_axes([{"column": a, "set": "x", "passes": False} for a in COLUMNS[:3]])


def test_the_section_runs_end_to_end_and_its_report_reads_the_stage_files(models, tmp_path):
    bargs, margs, targs = _args(
        models,
        tmp_path,
        lora_placements=list(PLACEMENTS),
        learning_rates=[1e-3, 5e-3],
        seeds=[0, 1],
        samples=1,
    )
    stages = StageRunner(tmp_path / "run")
    res = run_behaviour(bargs, margs, targs, stages)
    ev = res["evaluated"]
    names = ["base", "prompting", "steered", "token-sft", "rep-steer"]
    assert list(ev["conditions"]) == names
    # score tables (prompts, seeds, answers): tuned variants carry both seeds, greedy + 1 sample
    tables = {c: np.asarray(t) for c, t in ev["scores"]["harmonic"].items()}
    assert tables["base"].shape == (4, 1, 2) and tables["rep-steer"].shape == (4, 2, 2)
    # the harmonic mean is AxBench's, over the headline axes, per answer
    axes = [ev["scores"][a]["steered"][1][0][0] for a in ev["headline"]]
    assert ev["scores"]["harmonic"]["steered"][1][0][0] == pytest.approx(harmonic_mean(*axes))
    # the behaviour column is VADER's compound of the answer, mapped onto [0, 1]
    vader = get_behaviour("sentiment").behaviour_scorer()
    answer = ev["answers"]["prompting"][2][0][1]
    unit = vader.to_unit(vader.score(["q"], [answer]))[0]
    assert ev["scores"]["behaviour"]["prompting"][2][0][1] == pytest.approx(unit)
    # every condition against base, every other against steered, per headline metric
    family = 4 + 3
    assert len(ev["comparisons"]) == family * (1 + len(ev["headline"]))
    assert all(0 <= r["p_holm"] <= 1 and r["p_holm"] >= r["p_value"] for r in ev["comparisons"])
    # the choices in the report are those of the stage files
    select, prompting = _stage(stages, "behaviour_select"), _stage(stages, "behaviour_prompting")
    sentences = choice_sentences(res)
    assert f"steering layer {select['layer']} was chosen among 2 (1, 2) on 3 dev" in sentences[0]
    assert f"coefficient {select['coefficient']:g} was chosen among 2" in sentences[0]
    assert f"wording {prompting['chosen']!r} was chosen among 2" in sentences[1]
    for variant, sentence in zip(bargs.variants, sentences[2:]):
        chosen = res["trained"][variant]["chosen"]
        stage = _stage(stages, f"behaviour_tune_{chosen['name']}")
        assert stage["chosen_step"] == chosen["step"]
        assert sentence.startswith(f"{variant}: the LoRA placement {chosen['placement']} was")
        assert f"checkpoint step {chosen['step']} was chosen among 2" in sentence
        assert "seeds [0, 1]" in sentence
    # a rerun reads every stage back from its file (NaN stored as null) and reports the same
    rerun = run_behaviour(bargs, margs, targs, StageRunner(tmp_path / "run"))
    assert choice_sentences(rerun) == sentences
    report = Report("behaviour")
    add_behaviour_section(report, rerun)
    text = (report.write(tmp_path / "report")["markdown"]).read_text()
    assert "Against base (harmonic" in text and "pareto.png" in text
    assert ev["scorers"]["behaviour"] in text  # the judge is named on the column header
    # the scorers' agreement on labelled answers of the conditions, per condition too
    assert "on sentiment generations" in text and "by condition: base" in text


def test_a_fixed_choice_is_reported_as_fixed(models, tmp_path):
    bargs, margs, targs = _args(
        models, tmp_path, steer_layers=[2], coefficients=[0.5], variants=["rep-steer"],
        instruction="Be warm.", select_every=5,
    )  # fmt: skip
    res = run_behaviour(bargs, margs, targs, StageRunner(tmp_path / "run"))
    steering, prompting, variant = choice_sentences(res)[:3]
    assert "the config fixes the steering layer (2)" in steering
    assert "the config fixes the coefficient (0.5)" in steering
    assert "the config fixes the prompting wording ('configured')" in prompting
    assert "the config fixes the LoRA placement (attention)" in variant
    assert "the config fixes the checkpoint step (2)" in variant
    assert any("no difference shown" in s or "higher" in s for s in comparison_sentences(
        res["evaluated"]))  # fmt: skip


def test_every_choice_follows_the_reported_criterion(models, tmp_path, monkeypatch):
    """Scores rigged so the harmonic mean rises with each scored answer while the behaviour axis
    falls: the reported criterion picks the last candidate everywhere, behaviour the first."""
    calls = itertools.count()

    def rigged(self, prompts, answers):
        k = next(calls)
        rising = [(k * 1000 + i + 1) / 1e7 for i in range(len(answers))]
        columns = {c: [0.5] * len(answers) for c in COLUMNS}
        return columns | {"harmonic": rising, "behaviour": [1 - r for r in rising]}

    monkeypatch.setattr(SectionScorers, "score", rigged)
    bargs, margs, targs = _args(
        models, tmp_path, lora_placements=list(PLACEMENTS), learning_rates=[1e-3, 5e-3]
    )
    res = run_behaviour(bargs, margs, targs, StageRunner(tmp_path / "run"))
    assert (res["chosen"]["layer"], res["chosen"]["coefficient"]) == (2, 1.0)
    assert res["prompting"]["chosen"] == "few-shot"
    for variant in bargs.variants:
        chosen = res["trained"][variant]["chosen"]
        assert (chosen["placement"], chosen["learning_rate"], chosen["step"]) == (
            "attention+mlp",
            5e-3,
            2,
        )


def test_variants_are_declared_once():
    bargs = BehaviourArguments()
    assert bargs.variants == list(VARIANTS)
    with pytest.raises(ValueError, match="unknown lora_placements"):
        BehaviourArguments(lora_placements=["everywhere"])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        BehaviourArguments(seeds=[0, 0])


def test_the_cached_judge_scores_as_the_judge_and_reuses_pairs():
    from reptune.evaluation.scorers import JudgeLM
    from reptune.workflow.behaviour_scoring import CachedJudge

    judge = JudgeLM(make_model("gpt2"), make_tokenizer(pad=True), "g", model_under_test="llama")
    cached = CachedJudge(judge)
    prompts, answers = ["hi", "yo", "hi"], [" there", " you", " there"]
    found = cached.answer_log_probs(prompts, answers, 4)
    for a, b in zip(found, judge.answer_log_probs(prompts, answers, 4)):
        assert torch.allclose(a, b, atol=1e-5)
    assert len(cached.memory) == 2  # the repeated pair was scored once
