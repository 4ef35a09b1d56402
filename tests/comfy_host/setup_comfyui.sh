#!/usr/bin/env bash
# Install recipe for a headless CPU ComfyUI that can host this pack (our recipe; no ComfyUI code).
#
#   tests/comfy_host/setup_comfyui.sh COMFYUI_DIR VENV_DIR
#
# COMFYUI_DIR: an existing ComfyUI checkout. Checked with both:
#   v0.3.64, commit a125cd84 (github:Comfy-Org/ComfyUI, 2025-10-11; the pinned version) and
#   v0.27.0, commit 29fa1646 (the fork snapshot github:1696762169/ComfyUI, 2026-07-07: upstream
#   77917ed3 plus launcher/workflow files only; the newest snapshot we can fetch).
# VENV_DIR:    created if missing (a clean venv, no system site-packages).
# GGUF (optional): a ComfyUI-GGUF checkout (checked: city96 795e4515, 2025-12-18) passed as
#   COMFYUI_GGUF=... to tests/test_comfyui_native.py; `gguf` is installed here for it.
# Then:  COMFYUI_DIR=... COMFYUI_PYTHON=VENV_DIR/bin/python pytest -m comfyui tests/
#
# What it does and why:
#  1. torch==2.13.0 first (the CPU build where the index offers one), and every later install
#     runs under a constraint pinning it: otherwise spandrel -> torchvision pulls a CUDA torch.
#  2. ComfyUI's requirements.txt minus torch/torchvision/torchaudio, plus `requests`.
#  3. torchvision at the version matching torch 2.13 (0.28.0), --no-deps. The PyPI wheel is a
#     CUDA build: its compiled ops (_C.so) cannot load against CPU torch. torchvision guards
#     most of its meta registrations with _has_ops() but not the two register_fake calls for
#     nms/qnms, so `import torchvision` raises "operator torchvision::nms does not exist".
#     We guard those two decorators the same way (only when the ops did not load); ComfyUI only
#     needs torchvision's pure-Python parts.
#  4. torchaudio: no wheel matches torch 2.13 and the available ones cannot load their
#     compiled library. ComfyUI 0.3.x runs without it (it skips its two audio node modules,
#     logged as "IMPORT FAILED: nodes_audio.py / nodes_audio_encoder.py"), but newer ComfyUI
#     (0.2x) imports it from comfy.sd, so for those (`import torchaudio` in comfy/sd.py's
#     imports) we install the newest wheel --no-deps and make its library load a soft failure
#     (_load_lib returns False, as for a build without the extension): audio nodes then fail
#     at use, everything else runs.
#  5. This project, editable (safetensors, einops, numpy, pillow, av), and a symlink
#     COMFYUI_DIR/custom_nodes/adastate -> this checkout (skip with ADASTATE_NO_LINK=1).
#  6. Smoke check: `python main.py --cpu --quick-test-for-ci` (boots, loads all nodes, exits 0).
set -euo pipefail

COMFYUI_DIR=$(realpath "${1:?usage: setup_comfyui.sh COMFYUI_DIR VENV_DIR}")
VENV_DIR=$(realpath -m "${2:?usage: setup_comfyui.sh COMFYUI_DIR VENV_DIR}")
REPO=$(realpath "$(dirname "$0")/../..")
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.28.0}
PYTHON=${PYTHON:-python3}

[ -f "$COMFYUI_DIR/main.py" ] || { echo "no ComfyUI checkout at $COMFYUI_DIR" >&2; exit 2; }
[ -x "$VENV_DIR/bin/python" ] || "$PYTHON" -m venv "$VENV_DIR"
PY="$VENV_DIR/bin/python"
PIP=("$PY" -m pip install --quiet)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "torch==$TORCH_VERSION" >"$work/constraints.txt"
grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([#;].*)?$' "$COMFYUI_DIR/requirements.txt" \
    >"$work/requirements.txt"

"${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" -c "$work/constraints.txt" -r "$work/requirements.txt" requests
"${PIP[@]}" --no-deps "torchvision==$TORCHVISION_VERSION"

"$PY" - <<'PY'
import importlib.util, pathlib, re
spec = importlib.util.find_spec("torchvision")
path = pathlib.Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
src = path.read_text()
new = re.sub(
    r'^@torch\.library\.register_fake\("torchvision::(\w+)"\)$',
    r'@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda fn: fn))',
    src, flags=re.M)
if new != src:
    path.write_text(new)
    print(f"guarded the unguarded register_fake calls in {path}")
PY
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

if grep -rqs "^import torchaudio" "$COMFYUI_DIR/comfy/ldm/lightricks/vae/audio_vae.py" \
        "$COMFYUI_DIR/comfy/audio_encoders/audio_encoders.py"; then
    "${PIP[@]}" --no-deps "torchaudio==${TORCHAUDIO_VERSION:-2.11.1}"
    "$PY" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchaudio")
path = pathlib.Path(spec.submodule_search_locations[0]) / "_extension" / "utils.py"
src = path.read_text()
old = "def _load_lib(lib: str) -> bool:"
if old in src and "_adastate_guard" not in src:
    src = src.replace(old, "def _load_lib(lib: str) -> bool:  # _adastate_guard\n"
                      "    try:\n        return _load_lib_unguarded(lib)\n"
                      "    except OSError:\n        return False\n\n\n"
                      "def _load_lib_unguarded(lib: str) -> bool:", 1)
    path.write_text(src)
    print(f"made the library load of {path} a soft failure")
PY
    "$PY" -c "import torchaudio; print('torchaudio', torchaudio.__version__)"
fi

"${PIP[@]}" -c "$work/constraints.txt" -e "$REPO"
"${PIP[@]}" -c "$work/constraints.txt" gguf   # ComfyUI-GGUF's reader (optional GGUF test)
"${PIP[@]}" -c "$work/constraints.txt" -r "$REPO/requirements.txt" opencv-python-headless  # + Evaluate

if [ -z "${ADASTATE_NO_LINK:-}" ] && [ ! -e "$COMFYUI_DIR/custom_nodes/adastate" ]; then
    ln -s "$REPO" "$COMFYUI_DIR/custom_nodes/adastate"
fi

(cd "$COMFYUI_DIR" && "$PY" main.py --cpu --quick-test-for-ci >"$work/boot.log" 2>&1) || {
    tail -50 "$work/boot.log" >&2; echo "ComfyUI did not boot" >&2; exit 1; }
grep -E "IMPORT FAILED|Cannot import .*adastate" "$work/boot.log" || true
echo "ComfyUI at $COMFYUI_DIR boots with $PY"
