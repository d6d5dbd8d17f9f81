#!/usr/bin/env bash
# Install umedge into .venv and run `umedge serve` (default: the embedded config.toml).
# Extra arguments go to `umedge serve`, e.g. --config my.toml --roles edge.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/umedge serve "$@"
