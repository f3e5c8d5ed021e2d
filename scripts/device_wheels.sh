#!/usr/bin/env bash
# Build, here, what the lent GPU machine needs to run this project (scripts/device_check.sh runs there).
#
# Its image holds CPython 3.12 with torch, numpy, scipy, lxml, matplotlib, tensorboard, pytest, ... but not the
# simulator and configuration stack, and nothing can be fetched there. This writes x86-64 CPython 3.12 wheels
# of exactly the missing packages (versions pinned to the ones tested here) into .device_wheels/, with
# dm_control slimmed to the parts our tasks load (its soccer and CMU walker assets, the dog domain's meshes
# and its test data dropped: 56 MB -> 4.4 MB), and the EGL / OpenGL loader packages into .gl/ (the device
# README's recipe), so that both travel in the 64 MiB a run may carry:
#   bash scripts/device_wheels.sh
#   device run: carry [".device_wheels", ".gl"], command "bash scripts/device_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.device_wheels
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
PACKAGES=("mujoco==3.17.0" "dm_control==1.0.50" "dm-env==1.6" "dm-tree==0.1.10" "labmaze==1.0.6" "glfw==2.11.0"
          "PyOpenGL==3.1.10" "gymnasium==1.4.0" "Farama-Notifications==0.0.6" "hydra-core==1.3.8" "omegaconf==2.3.1"
          "cma==4.5.0")
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux2014_x86_64 -d "$WHEELS" "${PACKAGES[@]}"
python3 -m pip wheel -q --no-deps -w "$WHEELS" "antlr4-python3-runtime==4.9.3"  # hydra's parser: an sdist only

python3 - "$WHEELS" <<'EOF'
"""Rewrite the dm_control wheel without the asset folders no task of ours loads (and their RECORD lines)."""
import pathlib, sys, zipfile

DROP = ("dm_control/locomotion/soccer/", "dm_control/locomotion/walkers/assets/", "dm_control/suite/dog_assets/",
        "dm_control/mujoco/testing/assets/")
[wheel] = pathlib.Path(sys.argv[1]).glob("dm_control-*.whl")
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
    for item in source.infolist():
        if item.filename.startswith(DROP):
            continue
        data = source.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.decode().startswith(DROP))
        target.writestr(item, data)
slim.replace(wheel)
EOF

rm -rf .gl && mkdir -p .gl /tmp/amd64/partial
APT_AMD64=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
apt-get "${APT_AMD64[@]}" update -qq
(cd .gl && apt-get "${APT_AMD64[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh "$WHEELS" .gl
