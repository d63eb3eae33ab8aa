#!/usr/bin/env bash
# The old Hello-GPT workflow end to end: prepare Poe's works, train the 12x384 `edgar_poe` GPT from
# scratch, fine-tune it on the poems (`poems` profile = the old config_from_poe.yaml), then chat.
#
#   POE_TEXTS=path/to/edgar_poe POEMS_TEXTS=path/to/poems examples/edgar_poe_to_poems.sh
#   TRAIN_TIME=30m TUNE_TIME=10m examples/edgar_poe_to_poems.sh     # cap each stage on a CPU
#
# Ctrl-C during a stage saves its checkpoint; run the same `hellogpt train ... --resume` to continue.
set -euo pipefail

POE_TEXTS=${POE_TEXTS:-../shared/data/edgar_poe}
POEMS_TEXTS=${POEMS_TEXTS:-../shared/data/poems}
TRAIN_TIME=${TRAIN_TIME:-}
TUNE_TIME=${TUNE_TIME:-}

hellogpt prepare "$POE_TEXTS" --out data/edgar_poe          # GPT-2 BPE ids, train.bin / val.bin / meta.json
hellogpt prepare "$POEMS_TEXTS" --out data/poems

hellogpt train --profile edgar_poe ${TRAIN_TIME:+--max-time "$TRAIN_TIME"}               # -> checkpoints/edgar_poe.pt
hellogpt tune --from edgar_poe.pt --profile poems ${TUNE_TIME:+--max-time "$TUNE_TIME"}  # -> checkpoints/poems_from_poe.pt

hellogpt info poems_from_poe.pt
hellogpt chat --checkpoint poems_from_poe.pt
