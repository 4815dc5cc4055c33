# Sourced by build_book.sh and test.sh: make (or reuse) the virtual environment
# .venv at the repository root and install everything the book needs into it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ "${DISTILL_ENV_READY:-}" != "$ROOT" ]; then  # not yet in this run (test.sh calls build_book.sh)
    if [ ! -x .venv/bin/python ]; then
        echo "== creating .venv with $("$PYTHON" --version)"
        "$PYTHON" -m venv .venv
    fi
    echo "== installing requirements.txt and the helper package into .venv"
    # pip's own exit status decides (pipefail); the filter only hides notices
    # about package indexes that this machine's pip configuration names.
    .venv/bin/python -m pip install --quiet -r requirements.txt -e . 2>&1 \
        | { grep -v "is ignored" || true; }
    export DISTILL_ENV_READY="$ROOT"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Offline: the original dataset files, if this checkout has them beside it.
if [ -z "${DISTILL_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data/mnist" ]; then
    export DISTILL_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
fi
echo "== DISTILL_DATA_DIR=${DISTILL_DATA_DIR:-<unset: TFDS downloads the data>}"
