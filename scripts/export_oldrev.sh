#!/usr/bin/env bash
# Export kernels/ of an older commit into the git-ignored .oldrev/ so one GPU call can time it beside the
# current tree (gpu_run.sh step la_old; carry ".oldrev"): the way to find which commit made a kernel slower.
#   scripts/export_oldrev.sh bfaac0c
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:?usage: scripts/export_oldrev.sh REV}"
rm -rf .oldrev && mkdir -p .oldrev
git archive "$rev" kernels | tar -x -C .oldrev
git rev-parse "$rev" > .oldrev/REV
echo "kernels/ of $(cat .oldrev/REV) in .oldrev/"
