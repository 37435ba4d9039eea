"""The alignment/helpfulness trade-off: behaviour and helpfulness against the steering coefficient.

Behaviour expectation (mean of +1 aligned / -1 misaligned answers) is fitted with
``tanh(a*c + b)``; helpfulness (probability of the correct letter on multiple-choice questions) with
the inverse quadratic ``p0 / (1 + a + a*(b^2/2)*c^2)`` over the full vocabulary and
``0.5 / (1 + a + a*(b^2/2)*c^2) + 0.25`` restricted to the choices. Fits are least squares
(:func:`scipy.optimize.curve_fit`); standard errors are the square roots of the covariance
diagonal, and R^2 is reported with each fit.

``p0`` and ``a`` of the full-vocabulary form cannot both be estimated (the curve only determines
``p0/(1+a)`` and ``a*b^2/(1+a)``), so ``p0`` is held fixed (default 1) and ``a``, ``b`` are fitted.
``b`` enters squared, so its sign is not identified: it is fitted as ``b >= 0``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.optimize import OptimizeWarning, curve_fit
from tqdm.auto import tqdm

from ...hooks import Positions
from ...steering import SteeredModel
from ...vectors import DEFAULT_COEFFICIENT_UNIT, SteeringVectors
from ..ab.datasets import ABItem, item_prompt
from ..ab.scoring import generate_texts, score_items, score_letters
from .sweep import check_sweep

__all__ = [
    "CURVES",
    "CurveFit",
    "TradeoffResult",
    "tanh_curve",
    "inverse_quadratic",
    "restricted_inverse_quadratic",
    "fit_curve",
    "fit_behaviour",
    "fit_helpfulness",
    "tradeoff_study",
]


def tanh_curve(c, a, b):
    """Behaviour expectation ``tanh(a*c + b)``.

    Example:
        >>> tanh_curve([0.0], a=0.3, b=0.0)
        array([0.])
    """
    return np.tanh(a * np.asarray(c, dtype=float) + b)


def inverse_quadratic(c, a, b, p0=1.0):
    """Full-vocabulary helpfulness ``p0 / (1 + a + a*(b^2/2)*c^2)``.

    Example:
        >>> inverse_quadratic([0.0], a=1.0, b=0.5)
        array([0.5])
    """
    c = np.asarray(c, dtype=float)
    return p0 / (1 + a + a * (b**2 / 2) * c**2)


def restricted_inverse_quadratic(c, a, b):
    """Helpfulness restricted to four choices ``0.5 / (1 + a + a*(b^2/2)*c^2) + 0.25``.

    Example:
        >>> restricted_inverse_quadratic([0.0], a=1.0, b=0.5)
        array([0.5])
    """
    c = np.asarray(c, dtype=float)
    return 0.5 / (1 + a + a * (b**2 / 2) * c**2) + 0.25


#: name -> (function, formula)
CURVES: dict[str, tuple[Callable, str]] = {
    "tanh": (tanh_curve, "tanh(a*c + b)"),
    "inverse_quadratic": (inverse_quadratic, "p0 / (1 + a + a*(b^2/2)*c^2)"),
    "inverse_quadratic_restricted": (
        restricted_inverse_quadratic,
        "0.5 / (1 + a + a*(b^2/2)*c^2) + 0.25",
    ),
}


@dataclass
class CurveFit:
    """A least-squares fit: parameters, their standard errors, R^2, and fixed constants.

    Example:
        >>> fit = fit_behaviour(c, y)
        >>> fit.params["a"], fit.stderr["a"], fit.r2
        >>> fit.predict([0.0, 1.0])
    """

    curve: str
    params: dict[str, float]
    stderr: dict[str, float]
    r2: float
    n: int
    fixed: dict[str, float] = field(default_factory=dict)

    @property
    def formula(self) -> str:
        return CURVES[self.curve][1]

    def predict(self, c) -> np.ndarray:
        return CURVES[self.curve][0](c, **self.params, **self.fixed)

    def as_dict(self) -> dict:
        return {**asdict(self), "formula": self.formula}


def fit_curve(
    curve: str,
    c: Sequence[float],
    y: Sequence[float],
    initial: Sequence[float],
    bounds=(-np.inf, np.inf),
    fixed: Mapping[str, float] | None = None,
) -> CurveFit:
    """Fit the named curve of :data:`CURVES` to ``(c, y)`` by least squares.

    A standard error is ``inf`` where the data cannot determine the parameter.

    Example:
        >>> fit_curve("tanh", c, y, initial=[0.1, 0.0])
    """
    func, _ = CURVES[curve]
    fixed = dict(fixed or {})
    names = [p for p in func.__code__.co_varnames[1 : func.__code__.co_argcount] if p not in fixed]
    c, y = np.asarray(c, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(c) & np.isfinite(y)
    c, y = c[keep], y[keep]
    if len(c) <= len(names):
        raise ValueError(f"{len(c)} points cannot determine {len(names)} parameters of {curve}")
    with warnings.catch_warnings():
        # Flat or degenerate data: the covariance is infinite and the standard errors say so.
        warnings.simplefilter("ignore", OptimizeWarning)
        popt, pcov = curve_fit(
            lambda x, *p: func(x, *p, **fixed),
            c,
            y,
            p0=list(initial),
            bounds=bounds,
            maxfev=20000,
        )
    residual = float(np.sum((y - func(c, *popt, **fixed)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    stderr = np.sqrt(np.clip(np.diag(pcov), 0, None))
    return CurveFit(
        curve,
        {k: float(v) for k, v in zip(names, popt)},
        {k: float(v) for k, v in zip(names, stderr)},
        1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0),
        int(len(c)),
        fixed,
    )


def fit_behaviour(c: Sequence[float], y: Sequence[float]) -> CurveFit:
    """Fit ``tanh(a*c + b)`` to behaviour expectations ``y`` in [-1, 1].

    The starting point comes from a straight-line fit of ``arctanh(y)``.

    Example:
        >>> fit = fit_behaviour(coefficients, behaviour_means)
    """
    c, y = np.asarray(c, dtype=float), np.asarray(y, dtype=float)
    slope, intercept = np.polyfit(c, np.arctanh(np.clip(y, -0.95, 0.95)), 1)
    return fit_curve("tanh", c, y, [slope, intercept])


def fit_helpfulness(
    c: Sequence[float], p: Sequence[float], restricted: bool = False, p0: float = 1.0
) -> CurveFit:
    """Fit the inverse quadratic to the correct-letter probability ``p`` against ``c``.

    ``restricted=True`` fits the form for probabilities renormalised over four choices.
    The starting point comes from the linear relation of ``1 / (p - offset)`` and ``c^2``.

    Example:
        >>> full = fit_helpfulness(c, p_full)
        >>> choices = fit_helpfulness(c, p_choices, restricted=True)
    """
    c, p = np.asarray(c, dtype=float), np.asarray(p, dtype=float)
    scale, offset = (0.5, 0.25) if restricted else (p0, 0.0)
    inv = scale / np.clip(p - offset, 1e-6, None)  # = 1 + a + a*(b^2/2)*c^2
    slope, intercept = np.polyfit(c**2, inv, 1)
    a0 = max(intercept - 1.0, 1e-3)
    b0 = math.sqrt(max(2.0 * slope / a0, 1e-6))
    bounds = ([-1.0 + 1e-9, 0.0], [np.inf, np.inf])
    if restricted:
        return fit_curve("inverse_quadratic_restricted", c, p, [a0, b0], bounds)
    return fit_curve("inverse_quadratic", c, p, [a0, b0], bounds, fixed={"p0": p0})


@dataclass
class TradeoffResult:
    """Per-coefficient behaviour and helpfulness, their fits, and per-item scores.

    Example:
        >>> res = tradeoff_study(model, tok, vecs, 14, coefficients, helpfulness_items=mmlu,
        ...                      behaviour_items=refusal_items)
        >>> res.fits["behaviour"].params
    """

    layer: int
    rows: list[dict]
    fits: dict[str, CurveFit | None]
    fit_errors: dict[str, str] = field(default_factory=dict)
    scores: dict[str, list[list[float]]] = field(default_factory=dict, repr=False)

    def fit_rows(self) -> list[dict]:
        """One table row per fit: parameters with standard errors and R^2."""
        rows = []
        for name, fit in self.fits.items():
            row = {"layer": self.layer, "fit": name}
            if fit is None:
                row.update(curve=None, error=self.fit_errors.get(name))
            else:
                row.update(curve=fit.curve, formula=fit.formula, r2=fit.r2, n=fit.n)
                for key, value in fit.params.items():
                    row[key], row[f"{key}_stderr"] = value, fit.stderr[key]
                row.update({k: v for k, v in fit.fixed.items()})
            rows.append(row)
        return rows


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return float(x.mean()), se


def _try_fit(fits, errors, name, fn, *args, **kwargs):
    try:
        fits[name] = fn(*args, **kwargs)
    except (RuntimeError, ValueError) as err:  # no convergence / too few points
        fits[name], errors[name] = None, str(err)


def tradeoff_study(
    model,
    tokenizer,
    vectors: SteeringVectors,
    layer: int,
    coefficients: Sequence[float],
    *,
    helpfulness_items: Sequence[ABItem],
    behaviour_items: Sequence[ABItem] | None = None,
    behaviour_prompts: Sequence[str] | None = None,
    behaviour_scorer: Callable[[str], float] | None = None,
    system: str | None = None,
    positions: Positions = "all",
    coefficient_unit: str = DEFAULT_COEFFICIENT_UNIT,
    max_new_tokens: int = 32,
    do_sample: bool = True,
    seed: int = 0,
    batch_size: int = 16,
    p0: float = 1.0,
    progress: bool = True,
) -> TradeoffResult:
    """Sweep ``coefficients`` at ``layer``; measure behaviour and helpfulness; fit both curves.

    Behaviour comes from A/B ``behaviour_items`` (letter scoring: +1 when the behaviour-matching
    letter is the more likely) or from free ``behaviour_prompts`` whose generations (sampled,
    ``max_new_tokens=32`` as published) are scored by ``behaviour_scorer`` (text -> +-1, e.g.
    :func:`reptune.behaviours.refusal.keyword_refusal_score`). Helpfulness is the probability of
    the correct letter of
    ``helpfulness_items`` at the answer position, over the full vocabulary and renormalised over
    the item's letters. Every coefficient runs in the same batches (per-row coefficients).

    Example:
        >>> res = tradeoff_study(model, tok, vecs, 14, np.arange(-10, 10.25, 0.25),
        ...                      helpfulness_items=mmlu, behaviour_prompts=harmful_requests,
        ...                      behaviour_scorer=keyword_refusal_score)
    """
    if (behaviour_items is None) == (behaviour_prompts is None):
        raise ValueError("give exactly one of behaviour_items and behaviour_prompts")
    if behaviour_prompts is not None and behaviour_scorer is None:
        raise ValueError(
            "behaviour_prompts need a behaviour_scorer (text -> +-1), e.g. "
            "reptune.behaviours.refusal.keyword_refusal_score"
        )
    if not helpfulness_items:
        raise ValueError("helpfulness_items is empty")
    if not (behaviour_items if behaviour_prompts is None else behaviour_prompts):
        raise ValueError("the behaviour items (or prompts) are empty")
    if not coefficients:
        raise ValueError("coefficients is empty: give the coefficients to sweep")
    coefficients = check_sweep(vectors, [layer], coefficients, False, coefficient_unit)
    steered = SteeredModel(
        model, vectors, layers=[layer], positions=positions, coefficient_unit=coefficient_unit
    )
    k = len(coefficients)
    bar = tqdm(total=2, desc=f"trade-off layer {layer}", disable=not progress)

    # Behaviour: rows are coefficient-major (all items at c0, then at c1, ...).
    if behaviour_items is not None:
        n_b = len(behaviour_items)
        coefs = torch.tensor(coefficients, dtype=torch.float32).repeat_interleave(n_b)
        records = score_items(
            steered,
            tokenizer,
            list(behaviour_items) * k,
            "letter",
            systems=system,
            coefficients=coefs,
            batch_size=batch_size,
            progress=progress,
        )
        flat = [float(r.score) for r in records]
    else:
        from ...pairs import format_chat

        n_b = len(behaviour_prompts)
        prompts = [format_chat(tokenizer, p, "", system) for p in behaviour_prompts] * k
        coefs = torch.tensor(coefficients, dtype=torch.float32).repeat_interleave(n_b)
        texts = generate_texts(
            steered,
            tokenizer,
            prompts,
            coefficients=coefs,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            do_sample=do_sample,
            seed=seed,
            progress=progress,
        )
        flat = [float(behaviour_scorer(t)) for t in texts]
    behaviour = [flat[i * n_b : (i + 1) * n_b] for i in range(k)]
    bar.update()

    n_h = len(helpfulness_items)
    prompts = [item_prompt(tokenizer, it, system, "(") for it in helpfulness_items] * k
    coefs = torch.tensor(coefficients, dtype=torch.float32).repeat_interleave(n_h)
    probs = score_letters(
        steered,
        tokenizer,
        prompts,
        [it.letters for it in helpfulness_items] * k,
        coefficients=coefs,
        batch_size=batch_size,
        progress=progress,
    )
    targets = [it.target for it in helpfulness_items] * k
    full = [p[t] for p, t in zip(probs, targets)]
    restricted = [p[t] / sum(p.values()) for p, t in zip(probs, targets)]
    bar.update()
    bar.close()

    rows = []
    full_by_c = [full[i * n_h : (i + 1) * n_h] for i in range(k)]
    restricted_by_c = [restricted[i * n_h : (i + 1) * n_h] for i in range(k)]
    for c, b, pf, pr in zip(coefficients, behaviour, full_by_c, restricted_by_c):
        b_mean, b_se = _mean_se(b)
        f_mean, f_se = _mean_se(pf)
        r_mean, r_se = _mean_se(pr)
        rows.append(
            {
                "layer": layer,
                "coefficient": c,
                "coefficient_unit": coefficient_unit,
                "behaviour": b_mean,
                "behaviour_se": b_se,
                "behaviour_n": len(b),
                "p_correct": f_mean,
                "p_correct_se": f_se,
                "p_correct_restricted": r_mean,
                "p_correct_restricted_se": r_se,
                "helpfulness_n": n_h,
            }
        )
    fits: dict[str, CurveFit | None] = {}
    errors: dict[str, str] = {}
    cs = [r["coefficient"] for r in rows]
    _try_fit(fits, errors, "behaviour", fit_behaviour, cs, [r["behaviour"] for r in rows])
    _try_fit(
        fits, errors, "helpfulness", fit_helpfulness, cs, [r["p_correct"] for r in rows], p0=p0
    )
    _try_fit(
        fits,
        errors,
        "helpfulness_restricted",
        fit_helpfulness,
        cs,
        [r["p_correct_restricted"] for r in rows],
        restricted=True,
    )
    return TradeoffResult(
        layer,
        rows,
        fits,
        errors,
        {"behaviour": behaviour, "p_correct": full_by_c, "p_correct_restricted": restricted_by_c},
    )
