"""Subcommands of the ``reptune`` console script (see :mod:`reptune.cli`)."""

from __future__ import annotations

import math
from dataclasses import field, fields
from pathlib import Path

from trl import TrlParser

from ..evaluation.ab.sampling import limit_options
from ..io import exists_as_file
from ..vectors import COEFFICIENT_UNITS, DEFAULT_COEFFICIENT_UNIT, check_coefficient_unit

__all__ = [
    "parse",
    "split_comma_lists",
    "coefficient_unit_field",
    "allow_vector_mismatch_field",
    "check_at_least",
    "check_finite",
    "check_output_folder",
    "load_vectors_option",
    "limit_options",
]


def coefficient_unit_field():
    """The ``--coefficient_unit`` option, the same in every command.

    Example:
        >>> coefficient_unit: str = coefficient_unit_field()
    """
    return field(
        default=DEFAULT_COEFFICIENT_UNIT,
        metadata={
            "help": "unit of the coefficients: 'residual_norm' (fraction of the layer's median "
            "residual norm, recorded by `reptune extract`) or 'raw' (multiples of the vector)",
            "choices": list(COEFFICIENT_UNITS),
        },
    )


#: List options whose values are free text (a prompt may hold a comma): never split.
TEXT_LIST_OPTIONS = frozenset({"prompt", "pca_texts", "limitations"})


def _list_options(dataclass_types) -> dict[str, type]:
    """``{option: element type}`` of the list options of ``dataclass_types``.

    Read from the parser's own actions (``nargs`` ``+`` or ``*``): the dataclass annotations
    are not reliable once a parser was built, as it rewrites ``Optional`` field types.
    """
    parser = TrlParser(dataclass_types)
    return {
        action.dest: action.type if action.type in (int, float) else str
        for action in parser._actions
        if action.nargs in ("+", "*")
        and action.option_strings
        and action.dest not in TEXT_LIST_OPTIONS
    }


def _convert(option: str, kind: type, text: str):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--{option} takes {kind.__name__} values, got {text!r}") from None


def _split(option: str, text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",")]
    if any(not part for part in parts):
        raise ValueError(
            f"--{option} {text!r} has an empty entry: separate values with single commas or "
            "spaces, e.g. --lora_target_modules q_proj,v_proj"
        )
    return parts


def split_comma_lists(dataclass_types, argv) -> list[str]:
    """``argv`` with the values of list options split at commas (``--layers 3,4`` is
    ``--layers 3 4``), so every list option takes a comma list as many tools do.

    Free-text lists (:data:`TEXT_LIST_OPTIONS`, such as ``--prompt``) are left whole.

    Example:
        >>> split_comma_lists([ModelArguments], ["--lora_target_modules", "q_proj,v_proj"])
        ['--lora_target_modules', 'q_proj', 'v_proj']
    """
    lists, out, current = _list_options(dataclass_types), [], None
    for token in argv:
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            current = name[2:] if name[2:] in lists else None
            if current and eq:
                out += [name, *_split(current, value)]
                continue
            out.append(token)
        elif current and "," in token:
            out += _split(current, token)
        else:
            out.append(token)
    return out


def _split_config_values(parsed, dataclass_types) -> None:
    """The same for list values set from ``--config`` YAML (``layers: "3,4"``)."""
    lists = _list_options(dataclass_types)
    for obj in parsed:
        for name in lists.keys() & {f.name for f in fields(obj)}:
            value = getattr(obj, name)
            if isinstance(value, str):
                value = [value]
            if isinstance(value, list) and any(isinstance(v, str) and "," in v for v in value):
                split = [p for v in value for p in (_split(name, v) if isinstance(v, str) else [v])]
                setattr(obj, name, [_convert(name, lists[name], str(v)) for v in split])


def parse(dataclass_types, argv, prog: str):
    """Parse ``argv`` into the dataclasses; ``--config FILE.yaml`` supplies defaults.

    List options take space- or comma-separated values (:func:`split_comma_lists`).

    Example:
        >>> (args,) = parse((ExtractArguments,), ["--config", "run.yaml"], "reptune extract")
    """
    parser = TrlParser(dataclass_types, prog=prog)
    parsed = parser.parse_args_and_config(split_comma_lists(dataclass_types, list(argv)))
    _split_config_values(parsed, dataclass_types)
    return parsed


def allow_vector_mismatch_field():
    """The ``--allow_vector_mismatch`` option, the same in every command that takes vectors.

    Example:
        >>> allow_vector_mismatch: bool = allow_vector_mismatch_field()
    """
    return field(
        default=False,
        metadata={
            "help": "use --vectors recorded for another model_type or depth anyway (the width "
            "and layers must still fit the model)"
        },
    )


def check_at_least(name: str, value, low: int = 1) -> None:
    """Raise unless the option ``--name`` is an int >= ``low`` (None passes).

    Example:
        >>> check_at_least("batch_size", 8)
    """
    if value is not None and (not isinstance(value, int) or value < low):
        raise ValueError(f"--{name} must be an integer >= {low}, got {value!r}")


def check_finite(name: str, values) -> None:
    """Raise unless every value of the option ``--name`` is a finite number.

    Example:
        >>> check_finite("coefficients", [-0.1, 0.1])
    """
    values = values if isinstance(values, (list, tuple)) else [values]
    bad = [v for v in values if not (isinstance(v, (int, float)) and math.isfinite(v))]
    if bad:
        raise ValueError(f"--{name} must be finite numbers, got {bad}")


def check_output_folder(path: str | None, name: str = "output") -> None:
    """Raise if ``--name`` names an existing file where a folder is to be written.

    Example:
        >>> check_output_folder("runs/eval")
    """
    if path is None or not str(path).strip():
        raise ValueError(f"--{name} is empty: name the folder to write")
    target = Path(path)
    if exists_as_file(target):
        raise ValueError(f"--{name} {path} is an existing file, not a folder: choose a folder")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--{name} {path}: {parent} is a file, not a folder")
            break


def load_vectors_option(
    path: str,
    layers=None,
    *,
    mode: str = "add",
    coefficient_unit: str = DEFAULT_COEFFICIENT_UNIT,
    normalize: bool = False,
):
    """Load ``--vectors`` and check ``--layers`` / the unit against it, before any model loads.

    The caller checks the vectors against the model once it is loaded
    (:meth:`~reptune.vectors.SteeringVectors.check_compatible`).

    Example:
        >>> vecs = load_vectors_option("runs/honesty/vectors", [12], coefficient_unit="raw")
    """
    from ..vectors import SteeringVectors

    check_coefficient_unit(coefficient_unit)
    if not path:
        raise ValueError("--vectors is empty: name the folder written by `reptune extract`")
    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"vectors folder {path} does not exist (write one with `reptune extract`)"
        )
    vecs = SteeringVectors.load(path)
    vecs = vecs.normalized() if normalize else vecs
    chosen = vecs
    if layers:
        depth = vecs.metadata.get("num_layers")
        if any(layer < 0 for layer in layers) and depth is None:
            raise ValueError(f"--layers {layers}: the vectors do not record the model's depth")
        # Negative layers count from the end, as everywhere in reptune.
        chosen = vecs.select([layer + int(depth) if layer < 0 else layer for layer in layers])
    if mode == "add":
        chosen.check_unit(coefficient_unit, chosen.layers)
    zero = [layer for layer in chosen.layers if not float(chosen[layer].norm()) > 0]
    if zero:
        raise ValueError(f"the vector of layers {zero} in {path} is zero: choose other --layers")
    return vecs
