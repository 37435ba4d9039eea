"""``reptune card RUN``: write the model card ``RUN/README.md`` of a run folder.

Example:
    $ reptune card runs/honesty --repo_id me/llama-honesty
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import parse

__all__ = ["HELP", "CardArguments", "main", "positional_as_option"]

HELP = "write the model card (README.md) of a run folder"


@dataclass
class CardArguments:
    """Options of ``reptune card``."""

    run_dir: str | None = field(
        default=None,
        metadata={
            "help": "Run folder (vectors/, adapter/, report/...). May also be given as the "
            "first argument: `reptune card RUN`."
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id of the base model, when the run recorded a local path."},
    )
    repo_id: str | None = field(
        default=None, metadata={"help": "Hub repo the card will live in (used in the example)."}
    )
    limitations: list[str] | None = field(
        default=None, metadata={"help": "Extra limitations, listed before the standard ones."}
    )
    template: str | None = field(
        default=None, metadata={"help": "A Jinja template to use instead of reptune's."}
    )


def positional_as_option(argv: list[str], option: str) -> list[str]:
    """Turn a leading bare argument into ``option VALUE``: dataclass parsers have no positionals.

    Example:
        >>> positional_as_option(["runs/a", "--private"], "--run_dir")
        ['--run_dir', 'runs/a', '--private']
    """
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        return [option, argv[0], *argv[1:]]
    return argv


def main(argv: list[str]) -> int:
    from ..publish.card import write_model_card

    (args,) = parse((CardArguments,), positional_as_option(argv, "--run_dir"), "reptune card RUN")
    if not args.run_dir:
        raise ValueError("no run folder given: use `reptune card RUN` or --run_dir RUN")
    path = write_model_card(
        args.run_dir,
        base_model=args.base_model,
        repo_id=args.repo_id,
        limitations=args.limitations,
        template=args.template,
    )
    print(path)
    return 0
