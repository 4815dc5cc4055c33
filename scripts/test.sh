#!/usr/bin/env bash
# Run every test, from empty caches (except where DISTILL_CI_CACHE is set: see
# below): the book build (every chapter executed once), then pytest on the helper's unit tests, the book's structure checks,
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
book_pid=""
COLAB_WORK=""
finish() {
    local status=$?
    if [ -n "$colab_pid" ] && kill -0 "$colab_pid" 2>/dev/null; then
        kill -- "-$colab_pid" 2>/dev/null || kill "$colab_pid" 2>/dev/null || true  # with pip
    fi
    if [ -n "$book_pid" ] && kill -0 "$book_pid" 2>/dev/null; then
        kill -- "-$book_pid" 2>/dev/null || kill "$book_pid" 2>/dev/null || true  # with its kernel
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
# Only where DISTILL_CI_CACHE names a folder (the GitHub workflow's, which
# GitHub keeps between runs): the compiled XLA programs (looked up by a hash of
# the program and the JAX version) and the book build's executed chapters
# (kept only while the helper's source and requirements.txt are unchanged, see
# scripts/build_book.sh) start from there, and a green run saves them back. The
# chapters under nbval execute in full either way.
CI_CACHE="${DISTILL_CI_CACHE:-}"
if [ -n "$CI_CACHE" ]; then
    mkdir -p "$CI_CACHE"
    if [ -d "$CI_CACHE/xla-cache" ]; then cp -a "$CI_CACHE/xla-cache" "$ROOT/_build/xla-cache"; fi
    if [ -d "$CI_CACHE/.jupyter_cache" ] && [ -f "$CI_CACHE/.jupyter_cache.source" ]; then
        cp -a "$CI_CACHE/.jupyter_cache" "$CI_CACHE/.jupyter_cache.source" "$ROOT/_build/"
    fi
    echo "== restored from $CI_CACHE: $(ls -A "$ROOT/_build" | tr '\n' ' ')"
fi
export DISTILL_CACHE_DIR="$ROOT/_build/distill-cache"
# The two executions of the chapters share the distillation runs of
# cache.distilled (chapter 8's eighteen; keyed on the helper's code, the
# library versions, the data and every setting), and only those: the one
# that gets to a run first computes it, while the other waits for it and
# reads it. The unit tests keep their own.
SHARED_RUNS="$ROOT/_build/shared-runs"
# The datasets, read once before anything runs side by side, so that two
# processes never prepare the same TFDS dataset at the same time.
python -c 'from distill import data
for name in data.CLASS_NAMES: data.load_dataset(name)' 2>&1 | grep -v "^[WIE]0000" || true
phase_done "setup (.venv, chromium, data)"

# The Colab stand-in (a wheel, a fresh environment, a kernel, the prepared
# notebooks; see scripts/colab_notebooks.py) is made outside the repository,
# in the background while the book builds: it mostly waits on pip.
COLAB_WORK="${TMPDIR:-/tmp}/distill-colab-$(printf %s "$ROOT" | sha256sum | cut -c1-8)"
echo "== preparing the Colab stand-in in $COLAB_WORK, in the background (log: _build/colab-setup.log)"
setsid --wait python scripts/colab_notebooks.py "$COLAB_WORK" --link _build/colab \
    >_build/colab-notebooks.txt 2>_build/colab-setup.log &
colab_pid=$!

# Execution 1, in the background: the book build, exactly as the README's
# book command does it (warnings are errors). Its exit status goes to
# _build/book-build.status, which the browser test waits for. The two
# executions run side by side: each leaves one of the two cores idle for
# much of its time (Python, tracing, small XLA programs).
export DISTILL_BOOK_HTML="$ROOT/_build/html"
export DISTILL_BOOK_STATUS="$ROOT/_build/book-build.status"
# Compiled XLA programs are kept for the run (both executions and the unit
# tests): a program is looked up by a hash of itself and of the JAX
# version, so a hit is the same program, never a stale result.
export JAX_COMPILATION_CACHE_DIR="$ROOT/_build/xla-cache"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.1
echo "== building the book in the background (log: _build/book-build.log)"
DISTILL_RUNS_DIR="$SHARED_RUNS" setsid --wait bash -c 'bash "$1/scripts/build_book.sh" >"$1/_build/book-build.log" 2>&1
    echo $? >"$2.tmp" && mv "$2.tmp" "$2"' _ "$ROOT" "$DISTILL_BOOK_STATUS" &
book_pid=$!

# While the book builds and the Colab stand-in is prepared: the helper's
# unit tests and the book's structure checks.
status=0
echo "== pytest: the unit tests and the book's structure checks"
python -m pytest tests --ignore=tests/test_rendered_book.py -p no:cacheprovider \
    --durations=10 "$@" || status=$?
phase_done "unit tests (book build alongside)"

if ! wait "$colab_pid"; then
    colab_pid=""
    cat _build/colab-setup.log
    echo "== the Colab stand-in could not be prepared (above)"
    exit 1
fi
colab_pid=""
cat _build/colab-setup.log
phase_done "waiting for the Colab stand-in"

# The helper without JAXopt: the Colab stand-in's environment has none until
# a chapter's install cell adds it, so this runs first (the helper from src/).
echo "== pytest: the helper in an environment without JAXopt (the Colab stand-in's)"
DISTILL_WITHOUT_JAXOPT_PYTHON="$COLAB_WORK/env/bin/python" python -m pytest \
    tests/test_without_jaxopt.py -p no:cacheprovider "$@" || status=$?
phase_done "without JAXopt"

# Execution 2: every chapter under nbval as Colab runs it, then the browser
# test of the built book, which first waits for the book build to finish.
mapfile -t notebooks <_build/colab-notebooks.txt
echo "== pytest: ${#notebooks[@]} chapters as Colab runs them, then the built book in a browser"
DISTILL_RUNS_DIR="$SHARED_RUNS" JUPYTER_PATH="$COLAB_WORK/jupyter/share/jupyter" python -m pytest "${notebooks[@]}" \
    tests/test_rendered_book.py --nbval-lax --nbval-kernel-name distill-colab \
    --nbval-cell-timeout 1800 -p no:cacheprovider --durations=10 "$@" || status=$?
wait "$book_pid" || true
book_pid=""
phase_done "chapters under nbval and browser test"
echo "== book build log (tail):"
tail -n 5 "$ROOT/_build/book-build.log"
book_status="$(cat "$DISTILL_BOOK_STATUS" 2>/dev/null || echo missing)"
if [ "$book_status" != 0 ]; then
    echo "== the book build failed (status $book_status): _build/book-build.log"
    grep -n -B2 -A20 "Traceback\|WARNING\|Error" "$ROOT/_build/book-build.log" | tail -n 80
    exit 1
fi
[ "$status" -eq 0 ] || exit "$status"

# Passed: the 3 GB environment goes; after a failure it stays for a look.
rm -rf "$COLAB_WORK" _build/colab
if [ -n "$CI_CACHE" ]; then
    rm -rf "$CI_CACHE/xla-cache" "$CI_CACHE/.jupyter_cache" "$CI_CACHE/.jupyter_cache.source"
    cp -a "$ROOT/_build/.jupyter_cache" "$ROOT/_build/.jupyter_cache.source" "$CI_CACHE/"
    # Programs are only ever added to the XLA cache, never pruned: past
    # 2 GiB it starts over empty next time rather than grow without end.
    if [ "$(du -sm "$ROOT/_build/xla-cache" | cut -f1)" -le 2048 ]; then
        cp -a "$ROOT/_build/xla-cache" "$CI_CACHE/"
    fi
    echo "== saved the executed chapters and the compiled programs to $CI_CACHE"
fi
