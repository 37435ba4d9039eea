"""One table of bad inputs across the API and the command line.

Each row must raise an error whose message names the problem, before any forward pass (no
decoder block and no embedding ran; for calls through a wrapper, the model itself was never
called) or, for a command, before any model is loaded; and it must leave no file behind.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

from reptune import cli
from reptune.extract import extract_vectors, measure_residual_norms, read_activations
from reptune.hooks import AblateVector
from reptune.pairs import ContrastivePair
from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.vectors import METADATA_FILE, VECTORS_FILE, SteeringVectors

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
CONTEXT = 64
PAIRS = [ContrastivePair("I love this day", "I hate this day"), ContrastivePair("yes", "no")]


@dataclass
class World:
    """A tiny model whose forward passes are counted, and files the rows point at."""

    model: torch.nn.Module
    tok: object
    root: Path
    calls: dict = field(default_factory=lambda: {"model": 0, "compute": 0})

    def vectors(self, **norms) -> SteeringVectors:
        g = torch.Generator().manual_seed(0)
        vecs = SteeringVectors({1: torch.randn(32, generator=g), 2: torch.randn(32, generator=g)})
        return vecs.with_residual_norms({1: 2.0, 2: 3.0}) if norms.get("norms", True) else vecs

    def steered(self, **kwargs) -> SteeredModel:
        kwargs.setdefault("coefficient_unit", "raw")
        return SteeredModel(self.model, self.vectors(), **kwargs)

    def batch(self, texts=("the quick brown fox", "I love"), **kwargs):
        return encode_batch(self.tok, list(texts), **kwargs)

    def path(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad_inputs")
    model, tok = make_model(context=CONTEXT), make_tokenizer(pad=True)
    w = World(model, tok, root)
    model.register_forward_pre_hook(lambda *a: w.calls.__setitem__("model", w.calls["model"] + 1))
    count = lambda *a: w.calls.__setitem__("compute", w.calls["compute"] + 1)  # noqa: E731
    model.get_input_embeddings().register_forward_pre_hook(count)
    for block in model.model.layers:
        block.register_forward_pre_hook(count)
    # Files the rows use.
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    describe = SteeringVectors.describe_model(model)
    vecs = w.vectors()
    SteeringVectors(vecs.vectors, {**vecs.metadata, **describe}).save(root / "vectors")
    SteeringVectors(w.vectors(norms=False).vectors, dict(describe)).save(root / "no_norms")
    zero = {1: torch.zeros(32), 2: torch.ones(32)}
    SteeringVectors(zero, {**describe, "residual_norms": {1: 1.0, 2: 1.0}}).save(root / "zero")
    SteeringVectors({0: torch.ones(32), 1: torch.ones(32)}, dict(describe)).save(root / "layer0")
    w.vectors().save(root / "as_list")
    (root / "as_list" / METADATA_FILE).write_text("[1, 2]")
    w.vectors().save(root / "bad_json")
    (root / "bad_json" / METADATA_FILE).write_text("{oops")
    w.vectors().save(root / "bad_norms")
    meta = json.loads((root / "bad_norms" / METADATA_FILE).read_text())
    meta["residual_norms"] = {"1": "big", "2": 3.0}
    (root / "bad_norms" / METADATA_FILE).write_text(json.dumps(meta))
    w.vectors().save(root / "bad_diag")
    meta = json.loads((root / "bad_diag" / METADATA_FILE).read_text())
    meta["diagnostics"] = [1, 2]
    (root / "bad_diag" / METADATA_FILE).write_text(json.dumps(meta))
    w.vectors().save(root / "bad_layers")
    meta = json.loads((root / "bad_layers" / METADATA_FILE).read_text())
    meta["layers"] = [1, 5]
    (root / "bad_layers" / METADATA_FILE).write_text(json.dumps(meta))
    from safetensors.torch import save_file

    (root / "bad_names").mkdir()
    save_file({"foo": torch.ones(32)}, str(root / "bad_names" / VECTORS_FILE))
    (root / "bad_names" / METADATA_FILE).write_text("{}")
    lines = {
        "pairs.jsonl": '{"positive": "I love it", "negative": "I hate it"}\n' * 2,
        "one_pair.jsonl": '{"positive": "I love it", "negative": "I hate it"}\n',
        "malformed.jsonl": '{"positive": "a", "negative": "b"}\n{"positive": "a",\n',
        "no_negative.jsonl": '{"positive": "a"}\n',
        "number.jsonl": '{"positive": 5, "negative": "b"}\n',
        "bad_label.csv": "statement,label\nThe sky is blue,maybe\n",
        "caa_bad.json": json.dumps(
            [
                {
                    "question": "Q?",
                    "answer_matching_behavior": ["A"],
                    "answer_not_matching_behavior": "B",
                }
            ]
        ),
        "rows.jsonl": '{"prompt": "Hi", "completion": "Hello"}\n',
        "a_file": "not a folder",
    }
    for name, text in lines.items():
        (root / name).write_text(text)
    (root / "a_folder.gguf").mkdir()
    return w


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- the table -------------------------------------------------------------------------------
@dataclass
class Row:
    id: str
    run: object  # API: fn(world); CLI: fn(world) -> argv
    error: type | tuple = ValueError
    match: str = ""
    cli: bool = False
    hooked: bool = False  # the call goes to the hooked model itself (refused before any block)
    xfail: str | None = None


# Texts that share every token up to position -2: a causal model reads no difference there.
SAME_UNTIL_LAST = [ContrastivePair("the quick brown fox.", "the quick brown fox!")]


def _long(n=200):
    return "word " * n


def _ablate_zero(w):
    SteeredModel(w.model, {1: torch.zeros(32)}, mode="ablate")


def _call(w, steered_kwargs=None, batch_kwargs=None, **call):
    steered = w.steered(**(steered_kwargs or {}))
    batch = w.batch(**(batch_kwargs or {}))
    batch.update(call)
    return steered(**batch)


def _drop_mask(batch):
    batch.pop("attention_mask")
    return batch


def _hooked_call_without_mask(w):
    with w.steered(positions=[-1]):
        w.model(**_drop_mask(w.batch()))


def _generate(w, prompt, max_new_tokens):
    w.steered().generate(**w.batch([prompt]), max_new_tokens=max_new_tokens, do_sample=False)


def _override_inside_with(w):
    steered = w.steered()
    with steered:
        steered(**w.batch(), coefficient=2.0)


def _config(output_dir="never-written", **kwargs):
    from reptune.training.config import RepTuneConfig

    return RepTuneConfig(output_dir=output_dir, **kwargs)


def _collate(rows):
    from reptune.training.collator import RepTuneCollator

    RepTuneCollator(make_tokenizer(pad=True), -1)(rows)


def _sweep(w, **kwargs):
    from reptune.evaluation.ab.datasets import load_items
    from reptune.evaluation.studies.sweep import steering_sweep

    items = load_items(str(FIXTURES / "claims.csv"), limit=2)
    args = dict(layers=[1], coefficients=[0.0, 1.0], coefficient_unit="raw", progress=False)
    args.update(kwargs)
    steering_sweep(w.model, w.tok, w.vectors(), items, **args)


def _score(w, **kwargs):
    from reptune.evaluation.ab.datasets import load_items
    from reptune.evaluation.ab.scoring import score_items

    items = load_items(str(FIXTURES / "claims.csv"), limit=2)
    score_items(w.steered(), w.tok, items, "letter", **kwargs)


def _tradeoff(w):
    from reptune.evaluation.ab.datasets import load_items
    from reptune.evaluation.studies.tradeoff import tradeoff_study

    items = load_items(str(FIXTURES / "mmlu.jsonl"), limit=2)
    tradeoff_study(
        w.model, w.tok, w.vectors(), 1, [], helpfulness_items=items, behaviour_items=items
    )


def _generate_texts(w, prompts, max_new_tokens=5):
    from reptune.evaluation.ab.scoring import generate_texts

    generate_texts(w.model, w.tok, prompts, max_new_tokens=max_new_tokens, batch_size=1)


def _letters(w, prompts):
    from reptune.evaluation.ab.letters import next_token_log_probs

    next_token_log_probs(w.model, w.tok, prompts, batch_size=1)


def _window_nll(w):
    from reptune.evaluation.lm.perplexity import window_nll

    window_nll(w.model, torch.arange(200) % 300, window=CONTEXT * 2, stride=8)


def _empty_training_set(w):
    from reptune.training.trainer import RepTuneTrainer

    args = _config(w.path("trained"), rep_weight=0.0, lm_weight=1.0, report_to=[], max_steps=1)
    RepTuneTrainer(w.model, args, train_dataset=[], processing_class=w.tok).train()


def _trainer(w, **kwargs):
    from reptune.training.trainer import RepTuneTrainer

    args = _config(w.path("trained"), report_to=[], max_steps=1, rep_layers=[1])
    kwargs.setdefault("vectors", w.vectors())
    RepTuneTrainer(w.model, args, train_dataset=ROWS_TO_TUNE, processing_class=w.tok, **kwargs)


def _trainer_with_args(w, args):
    from reptune.training.trainer import RepTuneTrainer

    RepTuneTrainer(w.model, args, vectors=w.vectors(), processing_class=w.tok)


ROWS_TO_TUNE = [{"prompt": "Hi", "completion": "Hello there"}] * 2


def _honesty_args(**kwargs):
    from reptune.workflow.honesty import HonestyArguments

    HonestyArguments(**kwargs).check_counts()


def _serve(w, body):
    from reptune.serve import ChatServer

    tok = make_tokenizer(pad=True)
    ChatServer(w.model, tok, w.vectors(), model_name="tiny").parse(body)


CHAT = [{"role": "user", "content": "hi"}]


API_ROWS = [
    # SteeredModel: construction
    Row("coefficient-str", lambda w: w.steered(coefficient="5"), TypeError, "coefficient.*str"),
    Row("coefficient-none", lambda w: w.steered(coefficient=None), TypeError, "coefficient"),
    Row("coefficient-nan", lambda w: w.steered(coefficient=float("nan")), match="NaN or inf"),
    Row("coefficient-2d", lambda w: w.steered(coefficient=torch.ones(2, 2)), match="1-D"),
    Row("coefficient-empty", lambda w: w.steered(coefficient=torch.ones(0)), match="empty"),
    Row(
        "coefficient-bool",
        lambda w: w.steered(coefficient=torch.ones(2).bool()),
        TypeError,
        "real numbers",
    ),
    Row("mode-unknown", lambda w: w.steered(mode="multiply"), match="unknown mode"),
    Row("positions-unknown", lambda w: w.steered(positions="middle"), match="unknown positions"),
    Row("positions-empty", lambda w: w.steered(positions=[]), match="empty list"),
    Row("positions-float", lambda w: w.steered(positions=[1.5]), TypeError, "must be ints"),
    Row(
        "positions-int-tensor",
        lambda w: w.steered(positions=torch.tensor([0, 1, 1])),
        TypeError,
        "boolean mask",
    ),
    Row(
        "positions-3d-mask",
        lambda w: w.steered(positions=torch.ones(1, 2, 3, dtype=torch.bool)),
        match="expected \\(seq,\\)",
    ),
    Row("ablate-zero-vector", _ablate_zero, match="zero"),
    Row("ablate-vector-zero-norm", lambda w: AblateVector(torch.zeros(4)), match="norm 0"),
    Row("layer-out-of-range", lambda w: w.steered(layers=[9]), match="out of range"),
    Row("layers-empty", lambda w: w.steered(layers=[]), match="no layers given"),
    Row(
        "vectors-other-model",
        lambda w: SteeredModel(w.model, {1: torch.ones(16)}, coefficient_unit="raw"),
        match="hidden size 16",
    ),
    Row(
        "vector-not-tensor",
        lambda w: SteeredModel(w.model, {1: [1.0] * 32}),
        TypeError,
        "not a torch.Tensor",
    ),
    Row(
        "vector-int-dtype",
        lambda w: SteeredModel(w.model, {1: torch.ones(32, dtype=torch.long)}),
        TypeError,
        "floating-point",
    ),
    Row("vectors-a-list", lambda w: SteeredModel(w.model, [torch.ones(32)]), TypeError, "dict"),
    Row(
        "unit-without-norms",
        lambda w: SteeredModel(w.model, w.vectors(norms=False)),
        match="median residual norm",
    ),
    Row("unit-unknown", lambda w: w.steered(coefficient_unit="percent"), match="coefficient_unit"),
    # SteeredModel: calls
    Row(
        "coefficient-rows",
        lambda w: _call(w, coefficient=torch.ones(3)),
        match="coefficient has 3 values but the batch has 2",
    ),
    Row("coefficient-str-call", lambda w: _call(w, coefficient="5"), TypeError, "coefficient"),
    Row(
        "mask-rows",
        lambda w: _call(w, {"positions": torch.ones(3, 4, dtype=torch.bool)}),
        match="position mask has 3 rows",
    ),
    Row(
        "mask-width",
        lambda w: _call(w, {"positions": torch.ones(2, 3, dtype=torch.bool)}),
        match="covers 3 columns",
    ),
    Row(
        "offsets-without-mask",
        lambda w: w.steered(positions=[-1])(**_drop_mask(w.batch())),
        match="no attention_mask",
    ),
    Row(
        "offsets-without-mask-hooked",
        _hooked_call_without_mask,
        match="no attention_mask",
        hooked=True,
    ),
    Row(
        "mask-rows-mismatch",
        lambda w: _call(w, attention_mask=torch.ones(3, 5, dtype=torch.long)),
        match="attention_mask has 3 rows",
    ),
    Row(
        "forward-past-context",
        lambda w: _call(w, batch_kwargs={"texts": [_long()]}),
        match="context is 64",
    ),
    Row("generate-prompt-past-context", lambda w: _generate(w, _long(), 5), match="context is 64"),
    Row(
        "generate-new-tokens-past-context",
        lambda w: _generate(w, "the quick brown fox", 100),
        match="plus 100 new tokens",
    ),
    Row("override-inside-with", _override_inside_with, match="cannot override the coefficient"),
    # Extraction
    Row(
        "method-unknown",
        lambda w: extract_vectors(w.model, w.tok, PAIRS, [1], method="median"),
        match="unknown method",
    ),
    Row("pairs-empty", lambda w: extract_vectors(w.model, w.tok, [], [1]), match="no contrastive"),
    Row(
        "pair-identical",
        lambda w: extract_vectors(w.model, w.tok, [ContrastivePair("a b", "a b")], [1]),
        match="identical",
    ),
    Row(
        "pair-not-text",
        lambda w: extract_vectors(w.model, w.tok, [ContrastivePair("a", 5)], [1]),
        TypeError,
        "negative text",
    ),
    Row(
        "pairs-one-pair",
        lambda w: extract_vectors(w.model, w.tok, PAIRS[0], [1]),
        TypeError,
        "not a single pair",
    ),
    Row(
        "text-past-context-last",
        lambda w: extract_vectors(
            w.model, w.tok, PAIRS + [ContrastivePair(_long(), "b")], [1], batch_size=1
        ),
        match="pair 2 \\(positive\\).*context of 64",
    ),
    Row(
        "position-before-text",
        lambda w: extract_vectors(w.model, w.tok, PAIRS, [1], position=-500),
        match="falls before the first token",
    ),
    Row(
        "position-past-end",
        lambda w: extract_vectors(w.model, w.tok, PAIRS, [1], position=0),
        match="past the end",
    ),
    Row(
        "position-generated",
        lambda w: extract_vectors(w.model, w.tok, PAIRS, [1], position="generated"),
        match="selects nothing",
    ),
    Row(
        "position-mask",
        lambda w: extract_vectors(w.model, w.tok, PAIRS, [1], position=torch.ones(4).bool()),
        TypeError,
        "extraction pads each batch",
    ),
    Row(
        "pca-one-pair",
        lambda w: extract_vectors(w.model, w.tok, PAIRS[:1], [1], method="pca_diff"),
        match="at least 2 pairs",
    ),
    Row(
        "batch-size-zero",
        lambda w: extract_vectors(w.model, w.tok, PAIRS, [1], batch_size=0),
        match="batch_size",
    ),
    Row(
        "pairs-same-until-position",
        lambda w: extract_vectors(w.model, w.tok, SAME_UNTIL_LAST, [1], position=-2),
        match="same tokens up to position -2",
    ),
    Row(
        "pca-pairs-same-until-position",
        lambda w: extract_vectors(
            w.model, w.tok, SAME_UNTIL_LAST * 2, [1], "pca_center", position=-2
        ),
        match="same tokens up to position",
    ),
    Row(
        "extract-layer-out-of-range",
        lambda w: extract_vectors(w.model, w.tok, PAIRS, [7]),
        match="out of range",
    ),
    Row(
        "reservoir-too-small",
        lambda w: extract_vectors(w.model, w.tok, PAIRS, [1], max_pairs_in_memory=0),
        match="max_pairs_in_memory",
    ),
    Row(
        "texts-one-string",
        lambda w: read_activations(w.model, w.tok, "hello", [1]),
        TypeError,
        "list of strings",
    ),
    Row(
        "norms-batch-size",
        lambda w: measure_residual_norms(w.model, w.tok, ["a"], [1], batch_size=0),
        match="batch_size",
    ),
    # SteeringVectors
    Row(
        "normalize-zero",
        lambda w: SteeringVectors({3: torch.zeros(4)}).normalized(),
        match="layers \\[3\\] is zero",
    ),
    Row(
        "load-json-list",
        lambda w: SteeringVectors.load(w.path("as_list")),
        match="steering_vectors.json holds a JSON list",
    ),
    Row(
        "load-missing",
        lambda w: SteeringVectors.load(w.path("nowhere")),
        FileNotFoundError,
        "nowhere",
    ),
    Row(
        "load-bad-json", lambda w: SteeringVectors.load(w.path("bad_json")), match="not valid JSON"
    ),
    Row(
        "load-bad-norms",
        lambda w: SteeringVectors.load(w.path("bad_norms")),
        match="residual_norms must be positive",
    ),
    Row(
        "load-bad-diagnostics",
        lambda w: SteeringVectors.load(w.path("bad_diag")),
        match="'diagnostics' must map layer",
    ),
    Row(
        "load-layer-mismatch",
        lambda w: SteeringVectors.load(w.path("bad_layers")),
        match="lists layers \\[1, 5\\]",
    ),
    Row(
        "load-tensor-names",
        lambda w: SteeringVectors.load(w.path("bad_names")),
        match="expected layer.<index>",
    ),
    # Training settings
    Row("rep-weight-nan", lambda w: _config(rep_weight=float("nan")), match="rep_weight.*nan"),
    Row("lm-weight-inf", lambda w: _config(lm_weight=float("inf")), match="lm_weight"),
    Row("retain-weight-negative", lambda w: _config(retain_weight=-1.0), match="retain_weight"),
    Row("rep-params-regex", lambda w: _config(rep_params="("), match="rep_params.*regular"),
    Row("param-lrs-nan", lambda w: _config(param_lrs=["v_proj=nan"]), match="learning rate"),
    Row("max-length-zero", lambda w: _config(max_length=0), match="max_length"),
    Row("rep-positions-unknown", lambda w: _config(rep_positions="middle"), match="positions"),
    Row(
        "collate-prompt-length",
        lambda w: _collate([{"input_ids": [1, 2], "prompt_length": 5}]),
        match="prompt_length=5",
    ),
    Row(
        "collate-prompt-not-text",
        lambda w: _collate([{"prompt": None, "completion": "x"}]),
        TypeError,
        "'prompt' is a NoneType",
    ),
    Row(
        "empty-training-set",
        _empty_training_set,
        match="empty",
    ),
    # Pair files
    Row(
        "jsonl-malformed",
        lambda w: __import__("reptune.pairs").pairs.load_jsonl_pairs(w.path("malformed.jsonl")),
        match="malformed.jsonl line 2",
    ),
    Row(
        "jsonl-no-negative",
        lambda w: __import__("reptune.pairs").pairs.load_jsonl_pairs(w.path("no_negative.jsonl")),
        match="line 1.*'negative'",
    ),
    Row(
        "jsonl-number",
        lambda w: __import__("reptune.pairs").pairs.load_jsonl_pairs(w.path("number.jsonl")),
        match="non-empty strings",
    ),
    Row(
        "claims-label",
        lambda w: __import__("reptune.behaviours.honesty").behaviours.honesty.load_claims(
            w.path("bad_label.csv")
        ),
        match="label must be",
    ),
    Row(
        "caa-answer-list",
        lambda w: __import__("reptune.pairs").pairs.load_caa_pairs(w.path("caa_bad.json")),
        match="must be strings",
    ),
    # Evaluation
    Row(
        "score-coefficients-length",
        lambda w: _score(w, coefficients=torch.ones(5)),
        match="one coefficient per prompt",
    ),
    Row(
        "generate-texts-past-context",
        lambda w: _generate_texts(w, ["hi", "the quick brown fox"], max_new_tokens=100),
        match="max_new_tokens=100",
    ),
    Row(
        "generate-texts-long-last",
        lambda w: _generate_texts(w, ["hi", _long()]),
        match="prompt #1",
    ),
    Row("letters-long-last", lambda w: _letters(w, ["hi", _long()]), match="prompt #1.*context"),
    Row(
        "sweep-layer-missing",
        lambda w: _sweep(w, layers=[1, 3]),
        match="no vector for layers \\[3\\]",
    ),
    Row(
        "sweep-coefficient-nan",
        lambda w: _sweep(w, coefficients=[0.0, float("nan")]),
        match="finite",
    ),
    Row("perplexity-window", _window_nll, match="window 128 exceeds"),
    Row("tradeoff-no-coefficients", _tradeoff, match="coefficients is empty"),
    Row(
        "report-plot-name",
        lambda w: (
            __import__("reptune.reporting.report")
            .reporting.report.Report("t")
            .plot_path("../x.png")
        ),
        match="plain file name",
    ),
    Row(
        "padding-side",
        lambda w: encode_batch(w.tok, ["a"], padding_side="middle"),
        match="padding_side",
    ),
    # Models
    Row(
        "model-spec-empty",
        lambda w: __import__("reptune.models").models.load_model(""),
        match="model spec",
    ),
    Row(
        "model-dtype",
        lambda w: __import__("reptune.models").models.load_model("x", dtype="float8"),
        match="Unknown dtype",
    ),
]


def _m(w):
    return ["--model", w.path("model")]


CLI_ROWS = [
    # extract
    Row(
        "extract-pairs-missing",
        lambda w: ["extract", "--pairs", w.path("none.jsonl"), "--output", w.path("out")] + _m(w),
        match="none.jsonl does not exist",
    ),
    Row(
        "extract-malformed-line",
        lambda w: (
            ["extract", "--pairs", w.path("malformed.jsonl"), "--output", w.path("out")] + _m(w)
        ),
        match="malformed.jsonl line 2",
    ),
    Row(
        "extract-missing-key",
        lambda w: (
            ["extract", "--pairs", w.path("no_negative.jsonl"), "--output", w.path("out")] + _m(w)
        ),
        match="'negative'",
    ),
    Row(
        "extract-method",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("out")]
            + ["--method", "median"]
            + _m(w)
        ),
        match="unknown --method 'median'",
    ),
    Row(
        "extract-batch-size",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("out")]
            + ["--batch_size", "0"]
            + _m(w)
        ),
        match="--batch_size must be an integer >= 1",
    ),
    Row(
        "extract-output-file",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("a_file")] + _m(w)
        ),
        match="a_file is an existing file",
    ),
    Row(
        "extract-position-zero",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("out")]
            + ["--position", "0"]
            + _m(w)
        ),
        match="past the end",
    ),
    Row(
        "extract-claims-mode",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("out")]
            + ["--claims_mode", "vibes"]
            + _m(w)
        ),
        match="unknown --claims_mode",
    ),
    Row(
        "extract-filter-known-pairs",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("out")]
            + ["--filter_known", "true"]
            + _m(w)
        ),
        match="--filter_known applies to a claims table",
    ),
    Row(
        "extract-pca-one-pair",
        lambda w: (
            ["extract", "--pairs", w.path("one_pair.jsonl"), "--output", w.path("out")]
            + ["--method", "pca_diff"]
            + _m(w)
        ),
        match="needs at least 2 pairs",
    ),
    Row(
        "extract-plot-layer",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("out")]
            + ["--layers", "1", "--plot_layer", "3"]
            + _m(w)
        ),
        match="--plot_layer 3 is not one of",
    ),
    Row(
        "extract-dtype",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("out")]
            + ["--dtype", "float8"]
            + _m(w)
        ),
        match="Unknown dtype",
    ),
    Row(
        "extract-model-missing",
        lambda w: (
            ["extract", "--pairs", w.path("pairs.jsonl"), "--output", w.path("out")]
            + ["--model", w.path("no_model")]
        ),
        match="no_model.*does not exist",
    ),
    Row(
        "extract-claims-label",
        lambda w: (
            ["extract", "--pairs", w.path("bad_label.csv"), "--output", w.path("out")] + _m(w)
        ),
        match="label must be",
    ),
    # steer
    Row(
        "steer-vectors-missing",
        lambda w: ["steer", "--vectors", w.path("nowhere"), "--prompt", "Hi"] + _m(w),
        match="vectors folder .*nowhere does not exist",
    ),
    Row(
        "steer-vectors-json-list",
        lambda w: ["steer", "--vectors", w.path("as_list"), "--prompt", "Hi"] + _m(w),
        match="holds a JSON list",
    ),
    Row(
        "steer-mode",
        lambda w: (
            ["steer", "--vectors", w.path("vectors"), "--prompt", "Hi", "--mode", "x"] + _m(w)
        ),
        match="unknown --mode 'x'",
    ),
    Row(
        "steer-positions",
        lambda w: (
            ["steer", "--vectors", w.path("vectors"), "--prompt", "Hi"]
            + ["--positions", "middle"]
            + _m(w)
        ),
        match="unknown positions 'middle'",
    ),
    Row(
        "steer-layers",
        lambda w: (
            ["steer", "--vectors", w.path("vectors"), "--prompt", "Hi", "--layers", "3"] + _m(w)
        ),
        match="no vector for layers \\[3\\]",
    ),
    Row(
        "steer-unit-without-norms",
        lambda w: ["steer", "--vectors", w.path("no_norms"), "--prompt", "Hi"] + _m(w),
        match="median residual norm",
    ),
    Row(
        "steer-coefficient-nan",
        lambda w: (
            ["steer", "--vectors", w.path("vectors"), "--prompt", "Hi"]
            + ["--coefficients", "nan"]
            + _m(w)
        ),
        match="--coefficients must be finite",
    ),
    Row(
        "steer-max-new-tokens",
        lambda w: (
            ["steer", "--vectors", w.path("vectors"), "--prompt", "Hi"]
            + ["--max_new_tokens", "0"]
            + _m(w)
        ),
        match="--max_new_tokens must be an integer >= 1",
    ),
    Row(
        "steer-zero-vector",
        lambda w: ["steer", "--vectors", w.path("zero"), "--prompt", "Hi"] + _m(w),
        match="layers \\[1\\].*is zero",
    ),
    Row(
        "steer-empty-prompt",
        lambda w: ["steer", "--vectors", w.path("vectors"), "--prompt", " "] + _m(w),
        match="--prompt is empty",
    ),
    # sweep
    Row(
        "sweep-vectors-missing",
        lambda w: (
            ["sweep", "--vectors", w.path("nowhere"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv")]
            + _m(w)
        ),
        match="nowhere does not exist",
    ),
    Row(
        "sweep-layers",
        lambda w: (
            ["sweep", "--vectors", w.path("vectors"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv"), "--layers", "1", "3"]
            + _m(w)
        ),
        match="no vector for layers \\[3\\]",
    ),
    Row(
        "sweep-positions",
        lambda w: (
            ["sweep", "--vectors", w.path("vectors"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv"), "--positions", "middle"]
            + _m(w)
        ),
        match="unknown positions",
    ),
    Row(
        "sweep-batch-size",
        lambda w: (
            ["sweep", "--vectors", w.path("vectors"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv"), "--batch_size", "0"]
            + _m(w)
        ),
        match="--batch_size",
    ),
    Row(
        "sweep-compare-missing",
        lambda w: (
            ["sweep", "--vectors", w.path("vectors"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv"), "--compare", f"rep={w.path('no_model')}"]
            + _m(w)
        ),
        match="no_model is neither a PEFT adapter folder",
    ),
    Row(
        "sweep-coefficients-nan",
        lambda w: (
            ["sweep", "--vectors", w.path("vectors"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv"), "--coefficients", "0", "nan"]
            + _m(w)
        ),
        match="finite",
    ),
    Row(
        "sweep-output-file",
        lambda w: (
            ["sweep", "--vectors", w.path("vectors"), "--output", w.path("a_file")]
            + ["--data", str(FIXTURES / "claims.csv")]
            + _m(w)
        ),
        match="existing file",
    ),
    Row(
        "sweep-data-missing",
        lambda w: (
            ["sweep", "--vectors", w.path("vectors"), "--output", w.path("out")]
            + ["--data", w.path("no.csv")]
            + _m(w)
        ),
        match="no.csv",
    ),
    Row(
        "sweep-unit-without-norms",
        lambda w: (
            ["sweep", "--vectors", w.path("no_norms"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv")]
            + _m(w)
        ),
        match="median residual norm",
    ),
    # eval
    Row(
        "eval-vectors-missing",
        lambda w: (
            ["eval", "--vectors", w.path("nowhere"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv")]
            + _m(w)
        ),
        match="nowhere does not exist",
    ),
    Row(
        "eval-positions",
        lambda w: (
            ["eval", "--vectors", w.path("vectors"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv"), "--positions", "middle"]
            + _m(w)
        ),
        match="unknown positions",
    ),
    Row(
        "eval-layers-without-vectors",
        lambda w: (
            ["eval", "--output", w.path("out"), "--data", str(FIXTURES / "claims.csv")]
            + ["--layers", "1"]
            + _m(w)
        ),
        match="give --vectors too",
    ),
    Row(
        "eval-perplexity-missing",
        lambda w: ["eval", "--output", w.path("out"), "--perplexity", w.path("none.txt")] + _m(w),
        match="none.txt does not exist",
    ),
    Row(
        "eval-stride",
        lambda w: (
            ["eval", "--output", w.path("out"), "--perplexity", str(FIXTURES / "text.txt")]
            + ["--window", "8", "--stride", "16"]
            + _m(w)
        ),
        match="--stride 16 is larger than --window 8",
    ),
    Row(
        "eval-coefficient-nan",
        lambda w: (
            ["eval", "--vectors", w.path("vectors"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv"), "--coefficient", "nan"]
            + _m(w)
        ),
        match="--coefficient must be finite",
    ),
    Row(
        "eval-adapter",
        lambda w: (
            ["eval", "--adapter", w.path("vectors"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv")]
            + _m(w)
        ),
        match="not a PEFT adapter folder",
    ),
    Row(
        "eval-zero-vector-ablate",
        lambda w: (
            ["eval", "--vectors", w.path("zero"), "--output", w.path("out")]
            + ["--data", str(FIXTURES / "claims.csv"), "--mode", "ablate"]
            + _m(w)
        ),
        match="is zero",
    ),
    # export-gguf
    Row(
        "gguf-layer-zero",
        lambda w: ["export-gguf", w.path("layer0"), "--output", w.path("out.gguf")],
        match="layer 0 cannot be exported",
    ),
    Row(
        "gguf-layers",
        lambda w: ["export-gguf", w.path("vectors"), "--output", w.path("o.gguf"), "--layers", "5"],
        match="no vector for layers \\[5\\]",
    ),
    Row(
        "gguf-output-folder",
        lambda w: ["export-gguf", w.path("vectors"), "--output", w.path("a_folder.gguf")],
        match="is a folder",
    ),
    Row(
        "gguf-vectors-missing",
        lambda w: ["export-gguf", w.path("nowhere"), "--output", w.path("o.gguf")],
        match="nowhere does not exist",
    ),
    # tune (its checks are the training code's)
    Row(
        "tune-data-missing",
        lambda w: ["tune", "--data", w.path("none.jsonl"), "--output_dir", w.path("out")] + _m(w),
        match="none.jsonl",
    ),
    Row(
        "tune-without-vectors",
        lambda w: ["tune", "--data", w.path("rows.jsonl"), "--output_dir", w.path("out")] + _m(w),
        match="needs steering vectors",
    ),
    Row(
        "tune-lora-with-train-layers",
        lambda w: (
            ["tune", "--data", w.path("rows.jsonl"), "--output_dir", w.path("out")]
            + ["--vectors", w.path("vectors"), "--train_layers", "1"]
            + _m(w)
        ),
        match="train_layers is for finetune='layers'",
    ),
    # comma lists: split, but an empty entry is refused before anything loads
    Row(
        "tune-lora-target-modules-empty-entry",
        lambda w: (
            ["tune", "--data", w.path("rows.jsonl"), "--output_dir", w.path("out")]
            + ["--vectors", w.path("vectors"), "--lora_target_modules", "q_proj,,v_proj"]
            + _m(w)
        ),
        match="--lora_target_modules 'q_proj,,v_proj' has an empty entry",
    ),
    Row(
        "sweep-limit-above-the-data",
        lambda w: (
            ["sweep", "--vectors", w.path("vectors"), "--data", str(FIXTURES / "claims.csv")]
            + [
                "--limit",
                "40",
                "--layers",
                "1",
                "--coefficients",
                "0",
                "1",
                "--output",
                w.path("o"),
            ]
            + _m(w)
        ),
        match="fewer than the 40 asked for",
    ),
    Row(
        "eval-limit-above-the-data",
        lambda w: (
            ["eval", "--data", str(FIXTURES / "claims.csv"), "--limit", "40"]
            + ["--output", w.path("o")]
            + _m(w)
        ),
        match="fewer than the 40 asked for",
    ),
    Row(
        "steer-layers-trailing-comma",
        lambda w: (
            ["steer", "--vectors", w.path("vectors"), "--prompt", "hi", "--layers", "1,"] + _m(w)
        ),
        match="--layers '1,' has an empty entry",
    ),
]
API_ROWS += [
    # Public entry points: the argument and the expected type are named.
    Row(
        "trainer-peft-config-dict",
        lambda w: _trainer(w, peft_config={"r": 8}),
        TypeError,
        "peft_config must be a peft.PeftConfig.*got dict",
    ),
    Row(
        "trainer-peft-config-model-config",
        lambda w: _trainer(w, peft_config=w.model.config),
        TypeError,
        "peft_config must be a peft.PeftConfig.*got LlamaConfig",
    ),
    Row(
        "trainer-peft-config-str",
        lambda w: _trainer(w, peft_config="lora"),
        TypeError,
        "peft_config must be a peft.PeftConfig.*got str",
    ),
    Row(
        "trainer-vectors-list",
        lambda w: _trainer(w, vectors=[torch.ones(32)]),
        TypeError,
        "vectors must be a SteeringVectors.*got list",
    ),
    Row(
        "trainer-args-dict",
        lambda w: _trainer_with_args(w, {"output_dir": w.path("never")}),
        TypeError,
        "args must be a RepTuneConfig, got dict",
    ),
    Row(
        "trainer-ref-model-str",
        lambda w: _trainer(w, ref_model="base"),
        TypeError,
        "ref_model must be a torch.nn.Module, got str",
    ),
    Row(
        "steered-model-none",
        lambda w: SteeredModel(None, w.vectors()),
        TypeError,
        "model must be a torch.nn.Module.*got NoneType",
    ),
    Row(
        "steered-vectors-list",
        lambda w: SteeredModel(w.model, [torch.ones(32)]),
        TypeError,
        "vectors must be SteeringVectors.*got list",
    ),
    Row(
        "steered-layers-str",
        lambda w: w.steered(layers="1"),
        TypeError,
        "layers must be an int or a list of ints, got str",
    ),
    Row(
        "steered-layers-float",
        lambda w: w.steered(layers=1.0),
        TypeError,
        "layers must be an int or a list of ints, got float",
    ),
    Row(
        "extract-pairs-path",
        lambda w: extract_vectors(w.model, w.tok, w.path("pairs.jsonl"), layers=[1]),
        TypeError,
        "pairs must be a list of ContrastivePair, got str.*load_pairs",
    ),
    Row(
        "extract-pairs-dicts",
        lambda w: extract_vectors(w.model, w.tok, [{"positive": "a", "negative": "b"}]),
        TypeError,
        "pair 0 is a dict.*ContrastivePair",
    ),
    # requested counts: delivered or refused, never shrunk
    Row(
        "split-dev-test-too-few",
        lambda w: __import__("reptune.workflow.select").workflow.select.split_dev_test(
            list(range(10)), 4, 8
        ),
        match="asks for 12 units but only 10 exist",
    ),
    Row(
        "split-pairs-no-test-item",
        lambda w: __import__("reptune.pairs").pairs.split_pairs([1, 2], 0.2),
        match="leaves no test item",
    ),
    Row(
        "load-items-limit-above-the-data",
        lambda w: __import__("reptune.evaluation.ab.datasets").evaluation.ab.datasets.load_items(
            str(FIXTURES / "claims.csv"), limit=50
        ),
        match="holds 6 items, fewer than the 50 asked for",
    ),
    Row(
        "sample-items-above-the-data",
        lambda w: __import__("reptune.evaluation.ab.sampling").evaluation.ab.sampling.sample_items(
            [1, 2], 3
        ),
        match="sample of 3 items but only 2 exist",
    ),
    Row(
        "caa-limit-above-the-data",
        lambda w: __import__("reptune.pairs").pairs.load_caa_pairs(
            FIXTURES / "caa_behaviour.json", limit=500
        ),
        match="fewer than limit=500",
    ),
    Row(
        "honesty-eval-limit-above-the-data",
        lambda w: _honesty_args(eval_sets=[str(FIXTURES / "claims.csv")], eval_limit=50),
        match="holds 6 items, fewer than the 50 asked for",
    ),
    Row(
        "behaviour-section-prompts-above-the-data",
        lambda w: _honesty_args(behaviour_section={"behaviour": "sentiment", "dev_prompts": 900}),
        match="the dev split has 45 prompts, 900 were requested",
    ),
    # reptune serve: a request body's values
    Row(
        "serve-null-coefficient",
        lambda w: _serve(w, {"messages": CHAT, "reptune": {"layers": [1], "coefficient": None}}),
        ValueError,
        "reptune.coefficient is required.*not null",
    ),
    Row(
        "serve-huge-int-coefficient",
        lambda w: _serve(w, {"messages": CHAT, "reptune": {"coefficient": 10**400}}),
        ValueError,
        "reptune.coefficient must be between",
    ),
    Row(
        "serve-huge-int-temperature",
        lambda w: _serve(w, {"messages": CHAT, "temperature": 10**400}),
        ValueError,
        "temperature must be between",
    ),
    Row(
        "serve-model-not-a-string",
        lambda w: _serve(w, {"messages": CHAT, "model": {"id": 1}}),
        ValueError,
        "model must be a string",
    ),
]
for row in CLI_ROWS:
    row.cli = True
ROWS = API_ROWS + CLI_ROWS


def _param(row: Row):
    marks = [pytest.mark.xfail(strict=True, reason=row.xfail)] if row.xfail else []
    return pytest.param(row, id=row.id, marks=marks)


def test_the_table_is_large_enough():
    assert len(ROWS) >= 60 and len({row.id for row in ROWS}) == len(ROWS)
    assert all(row.match for row in ROWS), "every row names the message it expects"


@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_bad_input_is_refused_early_and_clearly(row: Row, world: World, monkeypatch, capsys):
    import reptune.models

    before = _tree(world.root)
    world.calls.update(model=0, compute=0)
    if row.cli:

        def no_model(*args, **kwargs):
            raise AssertionError(f"{row.id}: a model was loaded before the input was checked")

        monkeypatch.setattr(reptune.models, "load_model", no_model)
        code = cli.main(row.run(world))
        err = capsys.readouterr().err
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert re.search(row.match, err), f"{err!r} does not match {row.match!r}"
    else:
        with pytest.raises(row.error, match=row.match):
            row.run(world)
    assert world.calls["compute"] == 0, "a forward pass ran before the input was refused"
    if not row.hooked:
        assert world.calls["model"] == 0, "the model was called before the input was refused"
    assert _tree(world.root) == before, "a file was left behind"
