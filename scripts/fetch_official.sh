#!/usr/bin/env bash
# The official model files that benchmarks/models.py times beside ours, exported into .official/ (git-ignored) so
# that scripts/gpu_run.sh can carry them to the GPU machine for one run: never committed, never installed here.
#
# This machine has no git network access: first bring each repository's mirror with the session's `fetch` tool
# (fetch github:qhfan/RALA, LeapLabTHU/InLine, ChuanyangZheng/L2ViT, Visual-Attention-Network/VAN-Classification,
# xinghaochen/SLAB, hustvl/ViG), which leaves bare repositories under /work/.mirror/ (MIRRORS overrides where).
set -euo pipefail
cd "$(dirname "$0")/.."
MIRRORS="${MIRRORS:-/work/.mirror}"
export_file() {  # repo (owner+name), path in the repo, destination under .official/
  local git_dir="$MIRRORS/$1/repo"
  [ -d "$git_dir" ] || { echo "no mirror at $git_dir: fetch github:${1/+//} first" >&2; exit 1; }
  mkdir -p "$(dirname ".official/$3")"
  git -C "$git_dir" show "HEAD:$2" > ".official/$3"
  echo "$3 from ${1/+//}@$(git -C "$git_dir" rev-parse HEAD):$2" >> .official/SOURCES
}
rm -rf .official && mkdir -p .official
export_file qhfan+RALA classfication/RALA.py rala/RALA.py
export_file LeapLabTHU+InLine models/inline_swin.py inline/models/inline_swin.py
export_file ChuanyangZheng+L2ViT classification/models/l2vit.py l2vit/models/l2vit.py
export_file Visual-Attention-Network+VAN-Classification models/van.py van/models/van.py
export_file xinghaochen+SLAB classification/models/slab_swin.py slab/models/slab_swin.py
export_file xinghaochen+SLAB classification/models/prepbn.py slab/models/prepbn.py
export_file hustvl+ViG classification/models/vig.py vig/models/vig.py
# ViG imports the fla 0.1 vendored in its repository (modified: bidirectional kernels), not the fla package
git -C "$MIRRORS/hustvl+ViG/repo" archive HEAD flash-linear-attention/fla | tar -x -C .official/vig --strip-components=1
echo "vig/fla from hustvl/ViG@$(git -C "$MIRRORS/hustvl+ViG/repo" rev-parse HEAD):flash-linear-attention/fla" >> .official/SOURCES
for folder in inline l2vit van slab vig; do touch ".official/$folder/models/__init__.py"; done
# vig.py imports causal_conv1d (a CUDA package the GPU machine lacks) for a class its classification models never use
mkdir -p .official/causal_conv1d
touch .official/causal_conv1d/__init__.py
printf 'CausalConv1dFn = None  # stub: imported by ViG, unused by its classification models\n' \
  > .official/causal_conv1d/causal_conv1d_interface.py
# RALA.py imports fvcore for its __main__ FLOP count only: a stub keeps the import working without the package.
mkdir -p .official/fvcore/nn
touch .official/fvcore/__init__.py
printf 'def FlopCountAnalysis(*args, **kwargs):\n    raise NotImplementedError("fvcore stub")\n\n\n' > .official/fvcore/nn/__init__.py
printf 'def flop_count_table(*args, **kwargs):\n    raise NotImplementedError("fvcore stub")\n' >> .official/fvcore/nn/__init__.py
cat .official/SOURCES
