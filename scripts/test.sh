#!/usr/bin/env bash
# Run every test: the helper's unit tests, the book's structure checks (toc,
# .md/.ipynb pairs, Colab cells), and every chapter of _toc.yml under nbval.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
mapfile -t chapters < <(python scripts/toc_notebooks.py)
echo "== pytest: tests/ and ${#chapters[@]} chapters"
python -m pytest tests "${chapters[@]}" --nbval-lax --nbval-current-env \
    -p no:cacheprovider --durations=15 "$@"
