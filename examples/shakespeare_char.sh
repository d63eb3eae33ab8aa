#!/usr/bin/env bash
# nanoGPT's character-level Shakespeare: a 6x384 model with dropout that learns to write plays
# (val loss about 1.5 after the profile's 5000 steps on a GPU; use --max-time on a CPU).
#
#   SHAKESPEARE=path/to/tinyshakespeare/input.txt examples/shakespeare_char.sh [--max-time 20m]
set -euo pipefail

SHAKESPEARE=${SHAKESPEARE:-../shared/data/tinyshakespeare/input.txt}

hellogpt prepare "$SHAKESPEARE" --tokenizer char --out data/shakespeare_char
hellogpt train --profile shakespeare_char "$@"      # -> checkpoints/shakespeare_char.pt
hellogpt chat --checkpoint shakespeare_char.pt
