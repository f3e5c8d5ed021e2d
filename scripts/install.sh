#!/usr/bin/env bash
# Install wm_robotics on a fresh Ubuntu/Debian machine (Python 3.10+):
#   bash scripts/install.sh        # system GL packages when missing, CPU torch, the package
#   bash scripts/install.sh dev    # ... plus the test/benchmark extras
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless MuJoCo rendering needs EGL: libglvnd's libEGL/libGL plus a vendor (Mesa's llvmpipe
# without a GPU). Video needs no system ffmpeg (imageio-ffmpeg ships one). Optional, installed when
# missing: jemalloc (training and benchmark scripts re-execute on it, wm_robotics/allocator.py; fp32 S
# updates take 20-40% less time), a C++ compiler and Python's headers (torch.compile's CPU kernels: the
# planners' compile=true).
LIBS="$(ldconfig -p 2>/dev/null || true)"
PACKAGES=""
if ! grep -q "libEGL.so.1" <<< "$LIBS" || ! grep -q "libGL.so.1" <<< "$LIBS" \
   || ! ls /usr/share/glvnd/egl_vendor.d/*.json >/dev/null 2>&1; then
  PACKAGES="libegl1 libgl1 libgles2 libglvnd0 libegl-mesa0 libgl1-mesa-dri"
fi
python3 -m pip --version >/dev/null 2>&1 || PACKAGES="$PACKAGES python3-pip"  # stock Debian/Ubuntu python3 has no pip
OPTIONAL=""
grep -q "libjemalloc.so.2" <<< "$LIBS" || OPTIONAL="libjemalloc2"
command -v "${CXX:-g++}" >/dev/null || OPTIONAL="$OPTIONAL g++"  # the compiler inductor calls
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
  || OPTIONAL="$OPTIONAL python3-dev"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
APT="$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"
if [ -n "$PACKAGES" ]; then
  $APT update -qq
  $APT install -y -qq $PACKAGES >/dev/null
elif [ -n "$OPTIONAL" ]; then
  $APT update -qq || true
fi
for PACKAGE in $OPTIONAL; do  # each on its own: one that fails leaves the others installed
  $APT install -y -qq "$PACKAGE" >/dev/null \
    || echo "warning: $PACKAGE not installed (without jemalloc: the system malloc; without g++ / headers: no compile=true)"
done

# A distribution's own Python (Debian 12, Ubuntu 23.04+) is marked externally managed (PEP 668) and pip
# refuses to install into it outside a virtual environment: install anyway (into /usr/local or ~/.local,
# the distribution's packages untouched) so that the README's plain `python3` commands work; say so.
if python3 -c 'import os, sys, sysconfig
sys.exit(sys.prefix != sys.base_prefix or not os.path.exists(sysconfig.get_path("stdlib") + "/EXTERNALLY-MANAGED"))'
then
  echo "note: $(command -v python3) is the system's Python (PEP 668, externally managed) and no virtual environment is"
  echo "      active: installing into it with pip's --break-system-packages. To keep it clean, run this script"
  echo "      inside a virtual environment instead: python3 -m venv .venv && . .venv/bin/activate"
  export PIP_BREAK_SYSTEM_PACKAGES=1
fi

# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
python3 -m pip install -q "torch==2.13.0" || python3 -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
if [ "${1:-}" = "dev" ]; then
  python3 -m pip install -q -e ".[dev]"
else
  python3 -m pip install -q -e .
fi
echo "wm_robotics installed (MUJOCO_GL=${MUJOCO_GL:-egl when headless})"
