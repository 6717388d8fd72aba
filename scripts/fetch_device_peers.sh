#!/usr/bin/env bash
# Peers the benchmarks compare against but linzoo does not depend on, exported into .peers/ (git-ignored) so that
# scripts/gpu_run.sh can carry them to the GPU machine for one run: never committed, never installed here.
#
#   flash-bidirectional-linear-attention (fla-org, pure Triton): the `flash_bla` peer of benchmarks/linear_attention.py.
#
# This machine has no git network access: first bring the repository's mirror with the session's `fetch` tool
# (fetch github:fla-org/flash-bidirectional-linear-attention), which leaves a bare repository under
# /work/.mirror/; MIRROR overrides where it is looked for.
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR="${MIRROR:-/work/.mirror/fla-org+flash-bidirectional-linear-attention/repo}"
if [ ! -d "$MIRROR" ]; then
  echo "no mirror at $MIRROR: fetch github:fla-org/flash-bidirectional-linear-attention first" >&2
  exit 1
fi
rm -rf .peers/flash_bla_src && mkdir -p .peers/flash_bla_src
git -C "$MIRROR" archive HEAD flash_bla LICENSE | tar -x -C .peers/flash_bla_src
git -C "$MIRROR" log -1 --format="flash_bla from fla-org/flash-bidirectional-linear-attention@%H (%cd)" \
  | tee .peers/flash_bla_src/SOURCE
