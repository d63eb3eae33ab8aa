#!/usr/bin/env bash
# The old Hello-GPT workflow end to end: train the 12x384 `edgar_poe` GPT from scratch on Poe's works,
# fine-tune it on the poems (`poems` profile = the old config_from_poe.yaml), then chat. Both texts ship
# with hellogpt (builtin:edgar_poe, builtin:poems): each profile prepares its data/ folder the first time.
#
#   examples/edgar_poe_to_poems.sh
#   TRAIN_TIME=30m TUNE_TIME=10m examples/edgar_poe_to_poems.sh     # cap each stage on a CPU
#
# Ctrl-C during a stage saves its checkpoint; run the same `hellogpt train ... --resume` to continue. A second
# run of this script stops at the first stage whose checkpoint exists (nothing is replaced without --overwrite).
set -euo pipefail

TRAIN_TIME=${TRAIN_TIME:-}
TUNE_TIME=${TUNE_TIME:-}

hellogpt train --profile edgar_poe ${TRAIN_TIME:+--max-time "$TRAIN_TIME"}            # data/edgar_poe -> checkpoints/edgar_poe.pt
hellogpt tune --from edgar_poe --profile poems ${TUNE_TIME:+--max-time "$TUNE_TIME"}  # data/poems -> checkpoints/poems_from_poe.pt

hellogpt info poems_from_poe.pt
hellogpt chat --checkpoint poems_from_poe.pt
