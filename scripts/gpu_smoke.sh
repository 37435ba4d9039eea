#!/usr/bin/env bash
# GPU smoke test, not part of CI (it needs GPUs):
#   1. the multi-process engine tests (tests/test_trainer_engines.py) on CUDA;
#   2. a bf16 ZeRO-3 and an FSDP2 rep-tuning run of a 7B-class Llama built from a config, a few
#      steps each, against the plain Trainer (scripts/bench_scale.py): tokens/s, MFU and the
#      step-time ratio, the last line of each run being one JSON object;
#   3. steered vs plain generation of a 1B-class Llama built from a config, every layer steered,
#      batch 1 and batch 32 (scripts/bench_generate.py): tokens/s of each, ratio in the JSON line.
#
#   bash scripts/gpu_smoke.sh             # on a machine with one or more CUDA GPUs
#   bash scripts/gpu_smoke.sh --dry-run   # no GPU: tiny model, 2 CPU processes, same code path
#
# With one GPU the engine tests run on CPU processes (NCCL needs one GPU per process) and the 7B
# runs use one process. The dry run takes about 1.5 minutes on 2 CPU cores; the GPU run has not
# been timed yet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" TOKENIZERS_PARALLELISM=false

if [[ "${1:-}" == "--dry-run" ]]; then
    export CUDA_VISIBLE_DEVICES="" DS_ACCELERATOR=cpu
    PROCS=2
    BENCH=(--dry_run)
    GEN=(--layers 2 --hidden 64 --vocab 500 --new-tokens 4 --repeats 1)
    echo "== dry run on CPU processes: engine tests skipped (CI runs them)"
else
    GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    if (( GPUS < 1 )); then
        echo "gpu_smoke: no CUDA GPU visible (use --dry-run to check the script on CPU)" >&2
        exit 1
    fi
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    PROCS=$GPUS
    BENCH=(--bf16)
    GEN=(--device cuda --dtype bfloat16 --preset llama-1b --new-tokens 64 --repeats 5)
    if (( GPUS >= 2 )); then
        echo "== engine tests on $GPUS GPUs (2 processes, NCCL)"
    else
        echo "== engine tests: one GPU, so on CPU processes (NCCL needs one GPU per process)"
    fi
    "$PY" -m pytest -q tests/test_trainer_engines.py
fi

for engine in deepspeed_zero3 fsdp2; do
    echo "== $engine: RepTuneTrainer vs Trainer, $PROCS process(es)"
    "$PY" -m accelerate.commands.launch --config_file "recipes/accelerate/$engine.yaml" \
        --num_processes "$PROCS" scripts/bench_scale.py --engine "$engine" "${BENCH[@]}" \
        2> >(grep -v -E "Warning|warn\(|return func" >&2) | grep -E "^(\{\"|$engine |run )"
done

for batch in 1 32; do
    echo "== steered generation, every layer, batch $batch: plain vs steered tokens/s"
    "$PY" scripts/bench_generate.py "${GEN[@]}" --steer-layers all --batch "$batch" --no-sweep \
        | tail -n 3
done
