#!/usr/bin/env bash
# The official SLA kernels (thu-ml/SLA, Apache-2.0, pure Triton) as benchmark peers: the `sparse_linear_attention`
# package of the main branch and of the SLA-1 branch, exported into .peers/sla/{main,SLA-1}/ (git-ignored) for
# benchmarks/sparse_linear_attention.py (peers `official`, `official_sla1`) and the opt-in parity test
# (LINZOO_SLA_OFFICIAL=.peers/sla/main pytest tests/kernels/test_sparse_linear_attention.py -k official).
# Never committed, never installed.
#
# This machine has no git network access: first bring the mirror with the session's `fetch` tool
# (fetch github:thu-ml/SLA), which leaves a bare repository under /work/.mirror/; MIRROR overrides where.
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR="${MIRROR:-/work/.mirror/thu-ml+SLA/repo}"
if [ ! -d "$MIRROR" ]; then
  echo "no mirror at $MIRROR: fetch github:thu-ml/SLA first" >&2
  exit 1
fi
for branch in main SLA-1; do
  rm -rf ".peers/sla/$branch" && mkdir -p ".peers/sla/$branch"
  git -C "$MIRROR" archive "$branch" sparse_linear_attention LICENSE.txt | tar -x -C ".peers/sla/$branch"
  git -C "$MIRROR" log -1 --format="sparse_linear_attention from thu-ml/SLA@%H ($branch, %cd)" "$branch" \
    | tee ".peers/sla/$branch/SOURCE"
done
