#!/usr/bin/env bash
# Data-parallel training on every GPU of this machine (NCCL; gloo when run with --set system.device=cpu).
# train.gradient_accumulation_steps is for all ranks together and must be divisible by their number;
# only rank 0 shows progress and writes the checkpoint. Ctrl-C saves and stops every rank.
#
#   examples/ddp_single_node.sh --profile edgar_poe [--resume | --overwrite] [--max-time 2h]
set -euo pipefail

GPUS=${GPUS:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}

torchrun --standalone --nproc_per_node="$GPUS" -m hellogpt train "$@"
