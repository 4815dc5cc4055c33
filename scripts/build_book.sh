#!/usr/bin/env bash
# Build the executed HTML book into _build/html (open _build/html/index.html).
# Warnings are errors: a broken reference or a failing cell fails the build.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
echo "== jupyter-book build"
jupyter-book build . --builder html -W -n --keep-going "$@"
echo "== the book is at $ROOT/_build/html/index.html"
