#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels the GPU machine lacks into .whl/ (git-ignored).
# The device has torch, timm, lightning, transformers, ...; it lacks diffusers, omegaconf, jsonargparse.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PIP="${PIP:-.venv/bin/python -m pip}"
for spec in diffusers==0.42.1 omegaconf==2.4.0 jsonargparse==4.53.0 \
            docstring-parser==0.18.0 typeshed-client==2.14.0 importlib_metadata==10.2.0 pycocotools==2.0.11; do
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl
