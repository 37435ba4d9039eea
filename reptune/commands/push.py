"""``reptune push RUN --repo_id NAME``: upload a run folder with its model card to the Hub.

A vectors folder (written by ``reptune extract`` or ``SteeringVectors.save``) is uploaded with
its vector card instead: the vector files, ``README.md`` and any ``*.gguf`` control vector.

The token comes from ``HF_TOKEN`` or ``hf auth login``; it is never written anywhere.

Example:
    $ reptune push runs/honesty --repo_id me/llama-honesty --private
    $ reptune push runs/honesty --repo_id me/llama-honesty --dry_run
    $ reptune push runs/honesty/vectors --repo_id me/llama-honesty-vectors
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import parse
from .card import positional_as_option

__all__ = ["HELP", "PushArguments", "main"]

HELP = "upload a run folder (adapter, vectors, report, card) or a vectors folder to the Hub"


@dataclass
class PushArguments:
    """Options of ``reptune push``."""

    run_dir: str | None = field(
        default=None,
        metadata={
            "help": "Run folder or vectors folder to upload. May also be given as the first "
            "argument: `reptune push RUN --repo_id NAME`."
        },
    )
    repo_id: str | None = field(
        default=None, metadata={"help": "Hub model repo, e.g. your-name/llama-honesty."}
    )
    private: bool = field(
        default=False, metadata={"help": "Create the repo private (an existing repo is kept)."}
    )
    dry_run: bool = field(
        default=False,
        metadata={"help": "List the files that would be uploaded; upload nothing, need no token."},
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})


def main(argv: list[str]) -> int:
    from ..publish.hub import push_run

    (args,) = parse((PushArguments,), positional_as_option(argv, "--run_dir"), "reptune push RUN")
    if not args.run_dir:
        raise ValueError("no run folder given: use `reptune push RUN --repo_id NAME`")
    if not args.repo_id:
        raise ValueError("--repo_id is required, e.g. --repo_id your-name/llama-honesty")
    files = push_run(
        args.run_dir,
        args.repo_id,
        private=args.private,
        dry_run=args.dry_run,
        commit_message=args.commit_message,
    )
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{verb} {len(files)} files to https://huggingface.co/{args.repo_id}:")
    for name in files:
        print(f"  {name}")
    return 0
