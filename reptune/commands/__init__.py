"""Subcommands of the ``reptune`` console script (see :mod:`reptune.cli`)."""

from __future__ import annotations

from dataclasses import field

from trl import TrlParser

from ..vectors import COEFFICIENT_UNITS, DEFAULT_COEFFICIENT_UNIT

__all__ = ["parse", "coefficient_unit_field"]


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


def parse(dataclass_types, argv, prog: str):
    """Parse ``argv`` into the dataclasses; ``--config FILE.yaml`` supplies defaults.

    Example:
        >>> (args,) = parse((ExtractArguments,), ["--config", "run.yaml"], "reptune extract")
    """
    parser = TrlParser(dataclass_types, prog=prog)
    return parser.parse_args_and_config(list(argv))
