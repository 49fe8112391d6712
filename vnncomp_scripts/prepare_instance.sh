#!/bin/bash
# VNN-COMP interface: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Checks that the network and the property can be read (exit 0), so that a benchmark the tool cannot
# handle is skipped before its timeout starts (exit 1, with the reason).
VERSION_STRING=v1
if [ "$1" != "$VERSION_STRING" ]; then
    echo "Expected first argument (version string) '$VERSION_STRING', got '$1'" >&2
    exit 1
fi
CATEGORY=$2
ONNX_FILE=$3
VNNLIB_FILE=$4
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
echo "Preparing lsub_helpers for category '$CATEGORY': '$ONNX_FILE', '$VNNLIB_FILE'"
exec "$PY" -c '
import sys
from lsub_helpers.io.onnx import load_onnx
from lsub_helpers.vnnlib import check_output_activation, read_vnnlib
try:
    loaded = load_onnx(sys.argv[1], softmax="drop")
    check_output_activation(read_vnnlib(sys.argv[2]), loaded.dropped)
except Exception as exc:
    print(f"cannot handle this instance: {exc}", file=sys.stderr)
    sys.exit(1)
' "$ONNX_FILE" "$VNNLIB_FILE"
