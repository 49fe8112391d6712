#!/bin/bash
# VNN-COMP interface: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT
# Writes sat (with the counterexample) / unsat / timeout / unknown / error to RESULTS.
VERSION_STRING=v1
if [ "$1" != "$VERSION_STRING" ]; then
    echo "Expected first argument (version string) '$VERSION_STRING', got '$1'" >&2
    exit 1
fi
CATEGORY=$2
ONNX_FILE=$3
VNNLIB_FILE=$4
RESULTS_FILE=$5
TIMEOUT=$6
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
echo "Running lsub_helpers on category '$CATEGORY': '$ONNX_FILE', '$VNNLIB_FILE', timeout $TIMEOUT -> '$RESULTS_FILE'"
"$PY" -m lsub_helpers vnncomp "$ONNX_FILE" "$VNNLIB_FILE" "$RESULTS_FILE" "$TIMEOUT"
exit 0
