#!/usr/bin/env bash
# Build the executed HTML book into _build/html (open _build/html/index.html).
# Warnings are errors: a broken reference or a failing cell fails the build.
# Extra arguments go to jupyter-book build.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

# Executed chapters are kept in _build/.jupyter_cache, so that a build after a
# prose-only edit runs nothing. That cache knows only the chapters' code
# cells; so that the book never shows what older code computed, it is
# emptied, and every chapter read and executed again, whenever the helper's
# source (distill.cache.source_hash, which also keys the helper's own results
# cache) or requirements.txt differs from what filled it.
stamp="$(python -c 'import hashlib, pathlib; from distill.cache import source_hash
print(source_hash(), hashlib.sha256(pathlib.Path("requirements.txt").read_bytes()).hexdigest())')"
stamp_file="$ROOT/_build/.jupyter_cache.source"
again=()
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
    [ ! -d "$ROOT/_build/.jupyter_cache" ] || echo "== the helper or requirements.txt changed: every chapter runs again"
    rm -rf "$ROOT/_build/.jupyter_cache"
    mkdir -p "$ROOT/_build"
    echo "$stamp" > "$stamp_file"
    again=(--all)
fi

echo "== jupyter-book build"
jupyter-book build . --builder html -W -n --keep-going "${again[@]}" "$@"
echo "== the book is at $ROOT/_build/html/index.html"
