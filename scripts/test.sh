#!/usr/bin/env bash
# Run every test, from empty caches: the book build (every chapter executed
# once), then pytest on the helper's unit tests, the book's structure checks,
# the built book in a headless browser, and every chapter under nbval, run as
# Colab runs it (executed a second and last time). Extra arguments go to
# pytest. Prints how long each phase took.
t0=$SECONDS
timings=()
phase_start=$t0
phase_done() {
    timings+=("$(printf '%-34s %5d s' "$1" $((SECONDS - phase_start)))")
    phase_start=$SECONDS
}
phase() {  # phase NAME COMMAND...: run it and note how long it took, even if it fails
    local name=$1 status=0
    shift
    "$@" || status=$?
    phase_done "$name"
    return $status
}
colab_pid=""
COLAB_WORK=""
finish() {
    local status=$?
    if [ -n "$colab_pid" ] && kill -0 "$colab_pid" 2>/dev/null; then
        kill -- "-$colab_pid" 2>/dev/null || kill "$colab_pid" 2>/dev/null || true  # with pip
    fi
    if [ ${#timings[@]} -gt 0 ]; then
        echo "== timings (exit status $status)"
        printf '   %s\n' "${timings[@]}"
        printf '   %-34s %5d s\n' "total" $((SECONDS - t0))
    fi
    if [ "$status" -ne 0 ] && [ -n "$COLAB_WORK" ] && [ -d "$COLAB_WORK" ]; then
        echo "== the Colab stand-in is kept for a look: $COLAB_WORK (the next run replaces it)"
    fi
}
trap finish EXIT

source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

# The browser test drives Debian's Chromium through its chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "== installing Debian's chromium and chromium-driver for the browser test"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# Empty caches: nothing an earlier run (or an older checkout) computed is
# read. _build holds the book, its cache of executed chapters, the helper's
# data and results cache for the book and the unit tests, and test artifacts.
rm -rf "$ROOT/_build"
mkdir -p "$ROOT/_build"
export DISTILL_CACHE_DIR="$ROOT/_build/distill-cache"
phase_done "setup (.venv, chromium)"

# The Colab stand-in (a wheel, a fresh environment, a kernel, the prepared
# notebooks; see scripts/colab_notebooks.py) is made outside the repository,
# in the background while the book builds: it mostly waits on pip.
COLAB_WORK="${TMPDIR:-/tmp}/distill-colab-$(printf %s "$ROOT" | sha256sum | cut -c1-8)"
echo "== preparing the Colab stand-in in $COLAB_WORK, in the background (log: _build/colab-setup.log)"
setsid --wait python scripts/colab_notebooks.py "$COLAB_WORK" --link _build/colab \
    >_build/colab-notebooks.txt 2>_build/colab-setup.log &
colab_pid=$!

# The rendered book is what the browser test reads: build it first, exactly
# as the README's book command does (warnings are errors).
phase "book build (execution 1)" bash "$ROOT/scripts/build_book.sh"
export DISTILL_BOOK_HTML="$ROOT/_build/html"

if ! wait "$colab_pid"; then
    colab_pid=""
    cat _build/colab-setup.log
    echo "== the Colab stand-in could not be prepared (above)"
    exit 1
fi
colab_pid=""
cat _build/colab-setup.log
phase_done "waiting for the Colab stand-in"

mapfile -t notebooks <_build/colab-notebooks.txt
echo "== pytest: tests/ and ${#notebooks[@]} chapters as Colab runs them"
phase "pytest (execution 2)" env JUPYTER_PATH="$COLAB_WORK/jupyter/share/jupyter" \
    python -m pytest tests "${notebooks[@]}" \
    --nbval-lax --nbval-kernel-name distill-colab --nbval-cell-timeout 1800 \
    -p no:cacheprovider --durations=15 "$@"

# Passed: the 3 GB environment goes; after a failure it stays for a look.
rm -rf "$COLAB_WORK" _build/colab
