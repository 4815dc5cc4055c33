#!/usr/bin/env bash
# Run every test: the helper's unit tests, the book's structure checks (toc,
# .md/.ipynb pairs, Colab cells), every chapter of _toc.yml under nbval, the
# built book in a headless browser, and every committed notebook in a fresh
# Colab-like environment. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

# The browser test drives Debian's Chromium through its chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "== installing Debian's chromium and chromium-driver for the browser test"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The rendered book is what the browser test reads: build it first, exactly
# as the README's book command does (warnings are errors).
bash "$ROOT/scripts/build_book.sh"
export DISTILL_BOOK_HTML="$ROOT/_build/html"
export DISTILL_COLAB_TEST=1

mapfile -t chapters < <(python scripts/toc_notebooks.py)
echo "== pytest: tests/ and ${#chapters[@]} chapters"
python -m pytest tests "${chapters[@]}" --nbval-lax --nbval-current-env \
    -p no:cacheprovider --durations=15 "$@"
