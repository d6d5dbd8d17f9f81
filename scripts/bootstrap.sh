#!/usr/bin/env bash
# Create .venv with umedge installed (editable). Usage: scripts/bootstrap.sh [EXTRAS]
# EXTRAS is a pip extras list such as "test". Installs Debian's python3-venv if venv lacks ensurepip.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
extras="${1:-}"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "umedge needs Python >= 3.11 ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
  fi
  "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
