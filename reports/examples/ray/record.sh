#!/usr/bin/env bash
# The record in this folder, reproduced: two Ray nodes on this machine (`slmbench node`), the two-node suite run with
# --executor ray and again locally, then the executor overhead (local vs ray, twice each), summarised by analyze.py.
# Run it under the CPU lock:  flock /tmp/slmbench-cpu.lock reports/examples/ray/record.sh
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); cd "$HERE/../../.."
. .venv/bin/activate
export SLMBENCH_CACHE_DIR=${SLMBENCH_CACHE_DIR:-/tmp/slmcache} SLMBENCH_DEVICES_DIR=$HERE/devices
HEAD=$(hostname -I | awk '{print $1}'):6379; OUT=${RECORD_OUT:-/tmp/slmbench-ray-record}; rm -rf "$OUT"; mkdir -p "$OUT"
{
echo "## nodes: head owns node-a, a second node owns node-b (1 CPU each)"
SLMBENCH_NODE_NAME=head slmbench node --devices node-a --num-cpus 1 2>&1 | grep -E "ray.scripts|runtime started"
SLMBENCH_NODE_NAME=second slmbench node --devices node-b --num-cpus 1 --address "$HEAD" 2>&1 | grep -E "ray.scripts|runtime started"
echo "## two-node run (--executor ray --address HEAD)"
/usr/bin/time -f "wall %e s" slmbench run "$HERE/two-nodes.yaml" --executor ray --address "$HEAD" --out "$OUT" --run-id two-nodes-ray 2>&1 | tail -2
python -m ray.scripts.scripts stop 2>&1 | tail -1
echo "## same suite, local executor"
/usr/bin/time -f "wall %e s" slmbench run "$HERE/two-nodes.yaml" --out "$OUT" --run-id two-nodes-local 2>&1 | tail -2
echo "## overhead: local vs ray (a local Ray cluster started by the run), twice each"
for i in 1 2; do
  for ex in local ray; do
    /usr/bin/time -f "ovh-$ex-$i wall %e s" slmbench run "$HERE/overhead.yaml" --executor $ex --out "$OUT" --run-id ovh-$ex-$i 2>&1 | tail -1
  done
done
} 2>&1 | tee "$OUT/console.txt"
python "$HERE/analyze.py" "$OUT/results.sqlite" "$HERE" > "$HERE/results.md" && cp "$OUT/console.txt" "$HERE/console.txt"
