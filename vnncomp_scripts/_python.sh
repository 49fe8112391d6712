# Sourced by the VNN-COMP scripts: the interpreter that has lsub_helpers (LSUB_PYTHON, else the
# repository's .venv, else python3 with the repository on PYTHONPATH).
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${LSUB_PYTHON:-}" ]; then
    PY="$LSUB_PYTHON"
elif [ -x "$REPO_DIR/.venv/bin/python" ]; then
    PY="$REPO_DIR/.venv/bin/python"
else
    PY=python3
fi
export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
