"""The ``reptune`` console script: one subcommand per module in :mod:`reptune.commands`.

Each subcommand module defines ``HELP`` (one line) and ``main(argv) -> int``; its options come
from dataclasses parsed with trl's ``TrlParser``, so ``--config run.yaml`` sets them from YAML and
any ``--option value`` on the command line overrides the file.

Example:
    $ reptune extract --model embedded:smollm2-135m --pairs pairs.jsonl --output runs/v
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main", "COMMANDS"]

#: subcommand name -> module under reptune.commands
COMMANDS = {
    "extract": "extract",
    "steer": "steer",
    "project": "project",
    "sweep": "sweep",
    "tune": "tune",
    "eval": "evaluate",
    "card": "card",
    "push": "push",
    "export-gguf": "export_gguf",
    "serve": "serve",
    "export-merged": "export_merged",
}


def _usage() -> str:
    lines = ["usage: reptune <command> [--config FILE.yaml] [--option value ...]", "", "commands:"]
    for name, module in COMMANDS.items():
        try:
            help_text = importlib.import_module(f"reptune.commands.{module}").HELP
        except ImportError:
            continue
        lines.append(f"  {name:<14} {help_text}")
    lines.append("")
    lines.append("Run `reptune <command> --help` for a command's options.")
    return "\n".join(lines)


# Optional dependencies and the extra that installs each.
OPTIONAL_EXTRAS = {"lm_eval": "eval", "deepspeed": "deepspeed"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"reptune: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"reptune.commands.{COMMANDS[name]}")
    try:
        return int(module.main(rest) or 0)
    except (ValueError, FileNotFoundError, TypeError) as err:
        # Bad input: one line with the reason, non-zero exit.
        print(f"reptune {name}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        # An optional dependency the chosen options need; reptune's own modules are not this.
        package = (err.name or "reptune").split(".")[0]
        if package == "reptune":
            raise
        extra = OPTIONAL_EXTRAS.get(package)
        fix = f"pip install 'reptune[{extra}]'" if extra else f"pip install {package}"
        print(f"reptune {name}: error: {package} is not installed; {fix}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
