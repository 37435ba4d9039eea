"""Subcommands of the ``reptune`` console script (see :mod:`reptune.cli`)."""

from __future__ import annotations

from trl import TrlParser

__all__ = ["parse"]


def parse(dataclass_types, argv, prog: str):
    """Parse ``argv`` into the dataclasses; ``--config FILE.yaml`` supplies defaults.

    Example:
        >>> (args,) = parse((ExtractArguments,), ["--config", "run.yaml"], "reptune extract")
    """
    parser = TrlParser(dataclass_types, prog=prog)
    return parser.parse_args_and_config(list(argv))
