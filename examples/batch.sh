#!/usr/bin/env bash
# Restore every video under a folder, as a media job would: plain log lines on stderr, a JSON
# report beside the output folder, exit code 1 if any input failed (the others are still written).
# Re-running skips finished outputs and resumes an interrupted Vivid-VR job where it stopped.
#   examples/batch.sh clips/ restored/ [extra vividvr options, e.g. --engine classic]
set -u
in=${1:?usage: batch.sh INPUT_DIR OUTPUT_DIR [options]}
out=${2:?usage: batch.sh INPUT_DIR OUTPUT_DIR [options]}
out=${out%/}
shift 2
vividvr restore "$in" -o "$out/" --recursive --json "$@" > "$out.report.json"
code=$?
python3 - "$out.report.json" <<'PY'
import json
import sys

for r in json.load(open(sys.argv[1]))["results"]:
    note = f"  ({r['error']})" if r["error"] else ""
    print(f"{r['status']:<11} {r['input']} -> {r['output']}{note}")
PY
exit $code
