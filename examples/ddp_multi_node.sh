#!/usr/bin/env bash
# Data-parallel training over several machines with torchrun's c10d rendezvous. Run the same command
# on every node; they meet at MASTER_ADDR:MASTER_PORT (a host every node can reach, usually node 0).
#
#   node 0:  NNODES=2 MASTER_ADDR=10.0.0.1 examples/ddp_multi_node.sh --profile edgar_poe
#   node 1:  NNODES=2 MASTER_ADDR=10.0.0.1 examples/ddp_multi_node.sh --profile edgar_poe
#
# Every node needs the dataset at the same path (prepare it on each, or use a shared disk); the
# checkpoint is written by global rank 0 only (on node 0 when it ranks first). Without InfiniBand,
# NCCL_IB_DISABLE=1 may be needed.
set -euo pipefail

NNODES=${NNODES:?set NNODES to the number of machines}
MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to the address of the rendezvous host}
MASTER_PORT=${MASTER_PORT:-29500}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
RUN_ID=${RUN_ID:-hellogpt}

torchrun \
  --nnodes="$NNODES" \
  --nproc_per_node="$GPUS_PER_NODE" \
  --rdzv_backend=c10d \
  --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" \
  --rdzv_id="$RUN_ID" \
  -m hellogpt train "$@"
