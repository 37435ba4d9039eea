"""The steps of the honesty pipeline, in order; each runs one resumable stage (or one per tuned
model) and records what later steps need on the shared :class:`HonestyRun`.

Example:
    >>> run = HonestyRun(hargs, margs, targs, stages, model, tok, stage_settings(...))
    >>> split_claims(run); extract_claim_vectors(run); choose_layers(run)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..behaviours.honesty import (
    HONESTY_CONDITIONS,
    Claim,
    claim_items,
    claim_rows,
    claims_from_json,
    claims_to_json,
    claims_to_pairs,
    filter_known_claims,
    load_claims,
)
from ..behaviours.honesty.claims_splits import split_claims_by_twin
from ..evaluation.lm.perplexity import load_text, perplexity
from ..extract import extract_vectors
from ..io import read_json, resolve_data, write_json
from ..vectors import SteeringVectors
from .measure import target_cosines
from .select import best_layer, heldout_separation, layer_window
from .stages import StageRunner
from .variants import DevSelection, load_variant, train_variant

__all__ = [
    "VARIANT_NAMES",
    "HonestyRun",
    "split_claims",
    "extract_claim_vectors",
    "choose_layers",
    "sweep_coefficients",
    "tune_variants",
]

#: Tuning target -> the name of the rep-tuned model; the token-only baselines are truth / lie.
VARIANT_NAMES = {"toward": "honest", "away": "dishonest", "orthogonal": "orthogonal"}


@dataclass
class HonestyRun:
    """What the steps share: the arguments, the loaded model, each stage's settings, and what
    the earlier steps produced (claims, vectors, layers, coefficient, tuned models).

    Example:
        >>> run = HonestyRun(hargs, margs, targs, stages, model, tok, settings)
    """

    hargs: object
    margs: object
    targs: object
    stages: StageRunner
    model: object
    tok: object
    settings: dict[str, dict]
    train: list[Claim] = field(default_factory=list)
    dev: list[Claim] = field(default_factory=list)
    test: list[Claim] = field(default_factory=list)
    vecs: SteeringVectors | None = None
    steer_layers: list[int] = field(default_factory=list)
    rep_layers: list[int] = field(default_factory=list)
    best_coefficient: float | None = None
    variants: dict[str, dict] = field(default_factory=dict)
    trained: dict[str, dict] = field(default_factory=dict)

    @property
    def layout(self):
        return self.stages.layout

    @property
    def position(self):
        """The extraction position: one offset, or the list of them."""
        offsets = self.hargs.extract_position
        return offsets[0] if len(offsets) == 1 else offsets

    @property
    def window(self) -> tuple[int, int]:
        return self.hargs.perplexity_window, self.hargs.perplexity_stride

    def pick(self, *names) -> dict:
        """The named honesty arguments, for a stage's settings."""
        h = asdict(self.hargs)
        return {n: h[n] for n in names}

    def folder(self, name: str) -> Path | None:
        """Where the tuned model ``name`` lives (None for the base model)."""
        if name == "base":
            return None
        return self.layout.adapter_dir if name == "honest" else self.layout.model_dir(name)

    def load(self, name: str):
        """``(model, tokenizer)`` of ``"base"`` or a tuned model, merged for inference."""
        return load_variant(self.margs, self.folder(name), merge=True)


def split_claims(run: HonestyRun) -> dict:
    """Claims -> train / dev / test, twins kept in one split, letters counterbalanced in each
    (optionally only the claims the model knows); counts, the headline on test claims."""
    hargs, layout = run.hargs, run.layout

    def split():
        claims = load_claims(resolve_data(hargs.claims))[: hargs.claims_limit]
        known = filter_known_claims(run.model, run.tok, claims)
        kept = known if hargs.filter_known else claims
        train, dev, test = split_claims_by_twin(
            kept, hargs.dev_fraction, hargs.test_fraction, run.targs.seed
        )
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
            # the headline: the test claims, in their counterbalanced letter order
            "test_known": len(filter_known_claims(run.model, run.tok, test)),
        }

    data = run.stages.run("pairs", split, run.settings["pairs"])
    data["base_claim_accuracy"] = data["test_known"] / data["test"]
    run.train, run.dev, run.test = (
        claims_from_json(read_json(layout.data_file(f"{n}_claims.json")))
        for n in ("train", "dev", "test")
    )
    return data


def extract_claim_vectors(run: HonestyRun) -> None:
    """Vectors from the train claims' pairs, with the layer-accuracy plot."""

    def vectors():
        from ..analysis.diagnostics import plot_layer_accuracy

        pairs = claims_to_pairs(run.train, run.tok, mode=run.hargs.pairing_mode)
        vecs = extract_vectors(
            run.model,
            run.tok,
            pairs,
            run.hargs.extract_layers,
            run.hargs.extract_method,
            run.position,
        )
        vecs.save(run.layout.vectors_dir)
        plot_layer_accuracy(vecs, run.layout.report_dir / "layer_accuracy.png")
        return {"layers": vecs.layers}

    run.stages.run("vectors", vectors, run.settings["vectors"])
    run.vecs = SteeringVectors.load(run.layout.vectors_dir, model=run.model)


def choose_layers(run: HonestyRun) -> dict:
    """Steering and tuning layers from the dev claims' separation (dev claims only)."""

    def layers():
        from ..analysis.diagnostics import plot_pca_scatter

        pairs = claims_to_pairs(run.dev, run.tok, mode=run.hargs.pairing_mode)
        acc = heldout_separation(run.model, run.tok, run.vecs, pairs, run.position)
        steer = run.hargs.steer_layers or [best_layer(acc)]
        rep = run.targs.rep_layers or layer_window(
            steer[0], run.vecs.layers, run.hargs.num_rep_layers
        )
        scatter = run.layout.report_dir / "pca_scatter.png"
        plot_pca_scatter(run.model, run.tok, pairs, steer[0], run.position, scatter)
        return {"dev_accuracy": acc, "steer_layers": steer, "rep_layers": rep}

    info = run.stages.run("layers", layers, run.settings["layers"])
    run.steer_layers, run.rep_layers = info["steer_layers"], info["rep_layers"]
    return info


def sweep_coefficients(run: HonestyRun) -> dict:
    """The dev sweep; the "steered" model is the strongest honest push it rates best under the
    dishonest persona (dev claims only)."""

    def sweep():
        from ..evaluation.studies.sweep import steering_sweep
        from ..reporting.plots import save_sweep

        res = steering_sweep(
            run.model,
            run.tok,
            run.vecs,
            claim_items(run.dev),
            run.steer_layers,
            run.hargs.sweep_coefficients,
            ablate=run.hargs.sweep_ablate,
            scorer="letter",
            conditions=HONESTY_CONDITIONS,
            coefficient_unit=run.targs.coefficient_unit,
            progress=False,
        )
        save_sweep(res, run.layout.report_dir, "sweep")
        cands = [
            r
            for r in res.rows
            if r.get("condition") == "dishonest"
            and r.get("mode", "add") == "add"
            and r["coefficient"] > 0
        ]
        best = max(cands, key=lambda r: (r["target_rate"], -r["coefficient"]))
        return {"rows": res.rows, "best_coefficient": best["coefficient"]}

    info = run.stages.run("sweep", sweep, run.settings["sweep"])
    run.best_coefficient = info["best_coefficient"]
    return info


def _dev_choice(run: HonestyRun, target: str, dev_text: str, base_dev_ppl: float) -> DevSelection:
    """Dev criterion: the strongest move of the cosine whose dev perplexity stays within the
    allowed increase; a step over the limit ranks below every step within it."""
    sign = {"toward": 1.0, "away": -1.0, "orthogonal": 0.0}[target]
    dev_rows = claim_rows(run.dev, True)

    def score(m) -> float:
        ppl = perplexity(m, run.tok, dev_text, *run.window, batch_size=8).perplexity
        ratio = ppl / base_dev_ppl - 1.0
        if ratio > run.hargs.max_perplexity_increase:
            return -1.0 - ratio
        cos = target_cosines(
            m, run.tok, run.vecs, dev_rows, run.rep_layers, run.targs.rep_positions
        )
        mean = sum(cos.values()) / len(cos)
        return sign * mean if sign else 1.0 - abs(mean)

    return DevSelection(score, run.hargs.select_every)


def tune_variants(run: HonestyRun) -> float:
    """Train every tuned model (rep-tuned per target, token-only truth / lie), each checkpoint
    chosen on dev; return the base model's dev perplexity (the yardstick)."""
    hargs = run.hargs
    dev_text = load_text(resolve_data(hargs.dev_text))
    base_dev_ppl = perplexity(run.model, run.tok, dev_text, *run.window, batch_size=8).perplexity
    run.variants = {
        VARIANT_NAMES[t]: dict(rep_target=t, honest=t != "away") for t in hargs.tune_targets
    }
    if hargs.token_baselines:
        run.variants |= {
            "truth": dict(rep_weight=0.0, lm_weight=1.0, honest=True),
            "lie": dict(rep_weight=0.0, lm_weight=1.0, honest=False),
        }
    for name, spec in run.variants.items():
        spec = dict(spec)
        rows = claim_rows(run.train, spec.pop("honest"))
        out = run.folder(name)
        select = None
        if "rep_target" in spec:
            select = _dev_choice(run, spec["rep_target"], dev_text, base_dev_ppl)
        run.trained[name] = run.stages.run(
            f"tune_{name}",
            lambda out=out, rows=rows, spec=spec, select=select: train_variant(
                run.margs,
                run.targs,
                run.vecs,
                rows,
                out,
                select=select,
                rep_layers=run.rep_layers,
                **spec,
            ),
            run.settings["train"] | {"variant": spec},
            main_process_only=False,
        )
    run.settings["evaluate"] = (
        run.settings["train"]
        | run.settings["sweep"]
        | {"trained": run.trained}
        | run.pick("scorer", "eval_sets", "eval_limit")
    )
    return base_dev_ppl
