"""The honesty pipeline: claims -> pairs -> vectors -> layers and coefficient chosen on dev
claims -> representation tuning (honest / dishonest, steps chosen on dev) and token-only
baselines (truth / lie) -> A/B evaluation on test claims, robustness, perplexity, trade-off.

The claims split three ways: train (vectors and tuning), dev (every choice: layers, the
steering coefficient, the training step) and test (every reported number).

Example:
    >>> results = run_honesty(HonestyArguments(), ModelArguments(), targs, stages)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..behaviours.honesty import (
    HONESTY_CONDITIONS,
    PAIRING_MODES,
    claim_items,
    claim_prompt,
    claim_rows,
    claims_from_json,
    claims_to_json,
    claims_to_pairs,
    evaluate_honesty,
    filter_known_claims,
    load_claims,
)
from ..evaluation.datasets import limit_options
from ..evaluation.perplexity import load_text, perplexity
from ..extract import METHODS, extract_vectors
from ..io import read_json, resolve_data, write_json
from ..pairs import split_pairs
from ..steering import SteeredModel
from ..vectors import SteeringVectors
from .measure import perplexity_rows, target_cosines
from .select import best_layer, heldout_separation, layer_window
from .stages import StageRunner
from .variants import DevSelection, load_variant, train_variant

__all__ = ["HonestyArguments", "VARIANT_NAMES", "run_honesty"]

#: Tuning target -> the name of the rep-tuned model; the token-only baselines are truth / lie.
VARIANT_NAMES = {"toward": "honest", "away": "dishonest", "orthogonal": "orthogonal"}


#: Items per extra evaluation set and helpfulness items when no limit is set (caps).
DEFAULT_EVAL_LIMIT = 200
DEFAULT_TRADEOFF_LIMIT = 48


@dataclass
class HonestyArguments:
    """What the honesty pipeline does (the model and training settings are separate)."""

    claims: str = field(
        default="reptune:honesty_claims.jsonl",
        metadata={"help": "true/false claims (statement,label); reptune:<file> = shipped data"},
    )
    claims_limit: int | None = field(default=None, metadata={"help": "use the first N claims"})
    pairing_mode: str = field(
        default="persona_answer", metadata={"help": f"one of {list(PAIRING_MODES)}"}
    )
    filter_known: bool = field(
        default=False, metadata={"help": "keep only claims the untuned model answers correctly"}
    )
    test_fraction: float = field(default=0.2, metadata={"help": "share of claims for test"})
    dev_fraction: float = field(
        default=0.2, metadata={"help": "share of the other claims kept for every choice (dev)"}
    )
    extract_layers: list[int] | None = field(default=None, metadata={"help": "layers to extract"})
    extract_method: str = field(default="mean_diff", metadata={"help": f"one of {list(METHODS)}"})
    extract_position: list[int] = field(
        default_factory=lambda: [-1], metadata={"help": "offsets from the end of each text"}
    )
    steer_layers: list[int] | None = field(
        default=None, metadata={"help": "layers to steer (default: best dev separation)"}
    )
    num_rep_layers: int = field(
        default=7, metadata={"help": "when rep_layers is unset: this many layers around the best"}
    )
    sweep_coefficients: list[float] = field(
        default_factory=lambda: [-0.5, -0.25, 0.0, 0.25, 0.5],
        metadata={"help": "coefficients of the dev sweep, in the training coefficient_unit"},
    )
    sweep_ablate: bool = field(
        default=True, metadata={"help": "add the ablated direction to the dev sweep"}
    )
    tune_targets: list[str] = field(
        default_factory=lambda: ["toward", "away"],
        metadata={"help": "toward = honest model, away = dishonest model"},
    )
    token_baselines: bool = field(
        default=True, metadata={"help": "also train truth/lie-tuned (token loss only) models"}
    )
    scorer: str = field(default="letter", metadata={"help": "letter or generate"})
    eval_sets: list[str] = field(
        default_factory=list, metadata={"help": "extra A/B files evaluated on every model"}
    )
    eval_limit: int | None = field(
        default=None,
        metadata={
            "help": "items per extra evaluation set: exactly this many (refused if a set holds "
            f"fewer; 0 = all); default: up to {DEFAULT_EVAL_LIMIT}"
        },
    )
    robustness_coefficients: list[float] = field(
        default_factory=lambda: [0.25, 0.5],
        metadata={"help": "dishonesty-steering strengths applied to the tuned models"},
    )
    perplexity_text: str | None = field(
        default="reptune:heldout_text.txt", metadata={"help": "held-out text for perplexity"}
    )
    dev_text: str = field(
        default="reptune:dev_text.txt", metadata={"help": "dev text for the perplexity check"}
    )
    max_perplexity_increase: float = field(
        default=0.10,
        metadata={"help": "a tuning step counts only if dev perplexity stays within this of base"},
    )
    select_every: int = field(default=2, metadata={"help": "steps between dev checkpoints"})
    perplexity_window: int = field(default=128, metadata={"help": "perplexity window (tokens)"})
    perplexity_stride: int = field(default=64, metadata={"help": "perplexity stride (tokens)"})
    tradeoff_items: str | None = field(
        default=None, metadata={"help": "MMLU-style A-D file for the trade-off curves"}
    )
    tradeoff_coefficients: list[float] = field(
        default_factory=lambda: [-0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5],
        metadata={"help": "coefficients of the trade-off sweep"},
    )
    tradeoff_limit: int | None = field(
        default=None,
        metadata={
            "help": "helpfulness items used: exactly this many (0 = all); default: up to "
            f"{DEFAULT_TRADEOFF_LIMIT}"
        },
    )
    behaviour_section: dict | None = field(
        default=None,
        metadata={
            "help": "a second section on a behaviour the model represents: BehaviourArguments as "
            "a YAML mapping, e.g. {behaviour: sentiment, steer_layers: [10]}"
        },
    )

    def __post_init__(self):
        if self.pairing_mode not in PAIRING_MODES:
            raise ValueError(f"pairing_mode must be one of {PAIRING_MODES}")
        if self.extract_method not in METHODS:
            raise ValueError(f"extract_method must be one of {METHODS}")
        if self.scorer not in ("letter", "generate"):
            raise ValueError(f"scorer must be 'letter' or 'generate', not {self.scorer!r}")
        unknown = set(self.tune_targets) - set(VARIANT_NAMES)
        if unknown:
            raise ValueError(f"unknown tune_targets {sorted(unknown)}: use {list(VARIANT_NAMES)}")
        self.behaviour_arguments()  # a bad section fails here, before any model loads
        for name in ("test_fraction", "dev_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1)")

    def behaviour_arguments(self):
        """The second section's :class:`~reptune.workflow.behaviour.BehaviourArguments`, if any."""
        if not self.behaviour_section:
            return None
        from .behaviour import BehaviourArguments

        if not isinstance(self.behaviour_section, dict):
            raise TypeError("behaviour_section must be a mapping of BehaviourArguments fields")
        try:
            return BehaviourArguments(**self.behaviour_section)
        except TypeError as err:
            raise TypeError(f"behaviour_section: {err}") from err

    def check_counts(self, seed: int = 0) -> None:
        """Raise, before any model loads, if a set holds fewer items than a limit asks for.

        Example:
            >>> HonestyArguments(eval_sets=["facts.csv"], eval_limit=500).check_counts()
        """
        from ..evaluation.datasets import load_items

        if self.eval_limit:
            for path in self.eval_sets:
                load_items(resolve_data(path), limit=self.eval_limit, seed=seed)
        if self.tradeoff_limit and self.tradeoff_items:
            load_items(
                resolve_data(self.tradeoff_items), n_choices=4, limit=self.tradeoff_limit, seed=seed
            )
        behaviour = self.behaviour_arguments()
        if behaviour is not None:
            from .select import split_dev_test

            split_dev_test(
                behaviour.spec().eval_prompts(), behaviour.dev_prompts, behaviour.test_prompts
            )

    def input_files(self) -> list[str]:
        """Every named input file, resolved (checked before any model runs)."""
        files = [self.claims, self.perplexity_text, self.dev_text, self.tradeoff_items]
        return [resolve_data(f) for f in [*files, *self.eval_sets] if f]


def _position(hargs):
    return hargs.extract_position[0] if len(hargs.extract_position) == 1 else hargs.extract_position


def run_honesty(hargs: HonestyArguments, margs, targs, stages: StageRunner) -> dict:
    """Run every honesty stage under the run folder; return what the report needs.

    Example:
        >>> results = run_honesty(HonestyArguments(claims_limit=40), margs, targs, stages)
    """
    layout = stages.layout
    h, model_settings = asdict(hargs), asdict(margs)

    def pick(*names):
        return {n: h[n] for n in names}

    # Each stage's settings include its upstream stages', so a change reruns what depends on it.
    s_pairs = {"model": model_settings, "seed": targs.seed} | pick(
        "claims", "claims_limit", "filter_known", "test_fraction", "dev_fraction"
    )
    s_vectors = s_pairs | pick(
        "pairing_mode", "extract_layers", "extract_method", "extract_position"
    )
    s_layers = s_vectors | pick("steer_layers", "num_rep_layers") | {"rep_layers": targs.rep_layers}
    s_sweep = (
        s_layers | pick("sweep_coefficients", "sweep_ablate") | {"unit": targs.coefficient_unit}
    )
    model, tok = margs.load()

    def split():
        claims = load_claims(resolve_data(hargs.claims))[: hargs.claims_limit]
        known = filter_known_claims(model, tok, claims)
        kept = known if hargs.filter_known else claims
        train, test = split_pairs(kept, hargs.test_fraction, targs.seed)
        train, dev = split_pairs(train, hargs.dev_fraction, targs.seed)
        if min(len(train), len(dev), len(test)) < 2:
            raise ValueError(f"{len(kept)} claims are too few to split into train, dev and test")
        for name, part in (("train", train), ("dev", dev), ("test", test)):
            write_json(layout.data_file(f"{name}_claims.json"), claims_to_json(part))
        return {
            "claims": len(claims),
            "known": len(known),
            "kept": len(kept),
            "train": len(train),
            "dev": len(dev),
            "test": len(test),
            "base_claim_accuracy": len(known) / len(claims),
        }

    data = stages.run("pairs", split, s_pairs)
    train, dev, test = (
        claims_from_json(read_json(layout.data_file(f"{n}_claims.json")))
        for n in ("train", "dev", "test")
    )

    def vectors():
        from ..diagnostics import plot_layer_accuracy

        pairs = claims_to_pairs(train, tok, mode=hargs.pairing_mode)
        vecs = extract_vectors(
            model, tok, pairs, hargs.extract_layers, hargs.extract_method, _position(hargs)
        )
        vecs.save(layout.vectors_dir)
        plot_layer_accuracy(vecs, layout.report_dir / "layer_accuracy.png")
        return {"layers": vecs.layers}

    stages.run("vectors", vectors, s_vectors)
    vecs = SteeringVectors.load(layout.vectors_dir, model=model)

    def layers():  # dev claims only
        from ..diagnostics import plot_pca_scatter

        pairs = claims_to_pairs(dev, tok, mode=hargs.pairing_mode)
        acc = heldout_separation(model, tok, vecs, pairs, _position(hargs))
        steer = hargs.steer_layers or [best_layer(acc)]
        rep = targs.rep_layers or layer_window(steer[0], vecs.layers, hargs.num_rep_layers)
        plot_pca_scatter(
            model, tok, pairs, steer[0], _position(hargs), layout.report_dir / "pca_scatter.png"
        )
        return {"dev_accuracy": acc, "steer_layers": steer, "rep_layers": rep}

    layer_info = stages.run("layers", layers, s_layers)
    steer_layers, rep_layers = layer_info["steer_layers"], layer_info["rep_layers"]

    def sweep():  # dev claims only
        from ..evaluation import steering_sweep

        res = steering_sweep(
            model,
            tok,
            vecs,
            claim_items(dev),
            steer_layers,
            hargs.sweep_coefficients,
            ablate=hargs.sweep_ablate,
            scorer="letter",
            conditions=HONESTY_CONDITIONS,
            coefficient_unit=targs.coefficient_unit,
            progress=False,
        )
        res.save(layout.report_dir, "sweep")
        # The "steered" model: the strongest honest push the dev sweep rates best under the
        # dishonest persona.
        cands = [
            r
            for r in res.rows
            if r.get("condition") == "dishonest"
            and r.get("mode", "add") == "add"
            and r["coefficient"] > 0
        ]
        best = max(cands, key=lambda r: (r["target_rate"], -r["coefficient"]))
        return {"rows": res.rows, "best_coefficient": best["coefficient"]}

    sweep_info = stages.run("sweep", sweep, s_sweep)
    dev_text = load_text(resolve_data(hargs.dev_text))
    window = (hargs.perplexity_window, hargs.perplexity_stride)
    base_dev_ppl = perplexity(model, tok, dev_text, *window, batch_size=8).perplexity
    dev_rows = claim_rows(dev, True)

    def dev_choice(target):
        """Dev criterion: the strongest move of the cosine whose dev perplexity stays within
        the allowed increase; a step over the limit ranks below every step within it."""
        sign = {"toward": 1.0, "away": -1.0, "orthogonal": 0.0}[target]

        def score(m) -> float:
            ratio = (
                perplexity(m, tok, dev_text, *window, batch_size=8).perplexity / base_dev_ppl - 1.0
            )
            if ratio > hargs.max_perplexity_increase:
                return -1.0 - ratio
            cos = target_cosines(m, tok, vecs, dev_rows, rep_layers, targs.rep_positions)
            mean = sum(cos.values()) / len(cos)
            return sign * mean if sign else 1.0 - abs(mean)

        return DevSelection(score, hargs.select_every)

    variants = {
        VARIANT_NAMES[t]: dict(rep_target=t, honest=t != "away") for t in hargs.tune_targets
    }
    if hargs.token_baselines:
        variants |= {
            "truth": dict(rep_weight=0.0, lm_weight=1.0, honest=True),
            "lie": dict(rep_weight=0.0, lm_weight=1.0, honest=False),
        }
    train_settings = s_layers | {
        "train": targs.to_dict(),
        "dev": pick("dev_text", "max_perplexity_increase", "select_every"),
    }
    trained = {}
    for name, spec in variants.items():
        spec = dict(spec)
        rows = claim_rows(train, spec.pop("honest"))
        out = layout.adapter_dir if name == "honest" else layout.model_dir(name)
        select = dev_choice(spec["rep_target"]) if "rep_target" in spec else None
        trained[name] = stages.run(
            f"tune_{name}",
            lambda out=out, rows=rows, spec=spec, select=select: train_variant(
                margs, targs, vecs, rows, out, select=select, rep_layers=rep_layers, **spec
            ),
            train_settings | {"variant": spec},
            main_process_only=False,
        )
    names = list(variants)

    def folder(name):
        if name == "base":
            return None
        return layout.adapter_dir if name == "honest" else layout.model_dir(name)

    def evaluate():  # test claims only
        from ..evaluation import load_items

        sets = {"held-out claims": claim_items(test)}
        for path in hargs.eval_sets:
            sets[path.rsplit("/", 1)[-1]] = load_items(
                resolve_data(path),
                seed=targs.seed,
                **limit_options(hargs.eval_limit, DEFAULT_EVAL_LIMIT),
            )
        rows, cosines = [], {}
        for name in ["base", "steered", *names]:
            m, t = load_variant(margs, folder("base" if name == "steered" else name), merge=True)
            if name == "steered":
                m = SteeredModel(
                    m,
                    vecs,
                    layers=steer_layers,
                    coefficient=sweep_info["best_coefficient"],
                    coefficient_unit=targs.coefficient_unit,
                )
            for set_name, items in sets.items():
                res = evaluate_honesty(m, t, items, hargs.scorer)
                row = {"model": name, "dataset": set_name, "n": res["honest"].n}
                for persona, key in (
                    ("honest", "honest_persona"),
                    ("dishonest", "dishonest_persona"),
                ):
                    r = res[persona].target
                    row.update({key: r.value, f"{key}_low": r.low, f"{key}_high": r.high})
                rows.append(row)
            if name != "steered":
                cosines[name] = target_cosines(
                    m, t, vecs, claim_rows(test, True), rep_layers, targs.rep_positions
                )
        return {"rows": rows, "cosines": cosines}

    s_eval = (
        train_settings | s_sweep | {"trained": trained} | pick("scorer", "eval_sets", "eval_limit")
    )
    eval_info = stages.run("evaluate", evaluate, s_eval)

    def robustness():
        from ..evaluation import robustness_sweep

        loaders = [
            (n, (lambda n=n: load_variant(margs, folder(n), merge=True)[0]))
            for n in ("base", "truth", "honest")
            if n == "base" or n in variants
        ]
        res = robustness_sweep(
            loaders,
            tok,
            vecs,
            claim_items(test),
            steer_layers[:1],
            hargs.robustness_coefficients,
            scorer="letter",
            conditions={"honest": HONESTY_CONDITIONS["honest"]},
            coefficient_unit=targs.coefficient_unit,
            progress=False,
        )
        res.save(layout.report_dir, "robustness")
        return {"rows": res.rows}

    robust = None
    if hargs.robustness_coefficients:
        robust = stages.run("robustness", robustness, s_eval | pick("robustness_coefficients"))

    def ppl():
        models = {n: load_variant(margs, folder(n), merge=True) for n in ("base", *names)}
        return {
            "rows": perplexity_rows(models, load_text(resolve_data(hargs.perplexity_text)), *window)
        }

    s_ppl = s_eval | pick("perplexity_text", "perplexity_window", "perplexity_stride")
    ppl_info = stages.run("perplexity", ppl, s_ppl) if hargs.perplexity_text else None

    def tradeoff():
        from ..evaluation import load_items, plot_tradeoff, tradeoff_study

        helpful = load_items(
            resolve_data(hargs.tradeoff_items),
            n_choices=4,
            seed=targs.seed,
            **limit_options(hargs.tradeoff_limit, DEFAULT_TRADEOFF_LIMIT),
        )
        res = tradeoff_study(
            model,
            tok,
            vecs,
            steer_layers[0],
            hargs.tradeoff_coefficients,
            helpfulness_items=helpful,
            behaviour_items=claim_items(test),
            coefficient_unit=targs.coefficient_unit,
            progress=False,
        )
        plot_tradeoff(res.rows, res.fits, layout.report_dir / "tradeoff.png")
        return {"rows": res.rows, "fits": res.fit_rows(), "layer": res.layer}

    s_trade = s_sweep | pick("tradeoff_items", "tradeoff_coefficients", "tradeoff_limit")
    trade = stages.run("tradeoff", tradeoff, s_trade) if hargs.tradeoff_items else None
    return {
        "data": data,
        "layers": layer_info,
        "sweep": sweep_info,
        "trained": trained,
        "evaluate": eval_info,
        "robustness": robust,
        "perplexity": ppl_info,
        "tradeoff": trade,
        "dev_perplexity": base_dev_ppl if math.isfinite(base_dev_ppl) else None,
        "prompt_example": claim_prompt(tok, test[0]),
        "coefficient_unit": targs.coefficient_unit,
    }
