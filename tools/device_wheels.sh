#!/usr/bin/env bash
# Fetches the Python wheels the accelerator machine lacks into .whl/ (ignored by git), for its Python 3.12 on
# manylinux x86_64, at the versions installed in .venv here (so the device runs what CI tests).
#
#   bash tools/device_wheels.sh           # what tools/device_check.py needs: ml-collections
#   bash tools/device_wheels.sh --train   # also the data pipeline and training loop (--train-minutes)
#
# The machine already has jax, flax, optax, orbax-checkpoint, numpy, scipy, absl-py, etils, tqdm, pyyaml and
# the rest of device/KINDS.md's list; tools/README.md gives the command that installs these wheels there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CHECK=(ml-collections)
TRAIN=(grain array-record dm-tree tensorflow-datasets tensorflow-metadata googleapis-common-protos promise
       immutabledict toml wrapt simplejson future jsonschema jsonschema-specifications referencing rpds-py
       webcolors portpicker tensorboardX soundfile soxr librosa audioread pooch platformdirs decorator
       musdb museval stempeg ffmpeg-python)
packages=("${CHECK[@]}")
if [[ "${1:-}" == "--train" ]]; then packages+=("${TRAIN[@]}"); fi
mkdir -p .whl
for name in "${packages[@]}"; do
  version=$("$PYTHON" -c "import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))" "$name")
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$name==$version" \
    2>/dev/null || "$PYTHON" -m pip wheel --quiet --no-deps -w .whl "$name==$version"  # pure Python, sdist only
done
du -sh .whl
echo "wheels=$(ls .whl | wc -l) size_mb=$(du -sm .whl | cut -f1)"
