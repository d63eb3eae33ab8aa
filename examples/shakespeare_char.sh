#!/usr/bin/env bash
# nanoGPT's character-level Shakespeare: a 6x384 model with dropout that learns to write plays
# (val loss about 1.5 after the profile's 5000 steps on a GPU; use --max-time on a CPU).
# The text is not shipped with hellogpt: get tinyshakespeare's input.txt (karpathy/char-rnn) first.
#
#   examples/shakespeare_char.sh path/to/tinyshakespeare/input.txt [--max-time 20m]
set -euo pipefail

if [[ $# -lt 1 || ! -f $1 ]]; then
  echo "usage: $0 path/to/tinyshakespeare/input.txt [hellogpt train options, e.g. --max-time 20m]" >&2
  echo "  input.txt is the tiny Shakespeare corpus of karpathy/char-rnn (data/tinyshakespeare/input.txt)" >&2
  exit 2
fi
SHAKESPEARE=$1
shift

hellogpt prepare "$SHAKESPEARE" --tokenizer char --out data/shakespeare_char
hellogpt train --profile shakespeare_char "$@"      # -> checkpoints/shakespeare_char.pt
hellogpt chat --checkpoint shakespeare_char.pt
