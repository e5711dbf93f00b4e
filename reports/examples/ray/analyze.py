"""Summarise a record.sh store: placement, rows ray vs local, overhead per job (Markdown to stdout) + jobs.csv."""
import json, sqlite3, statistics, sys
db = sqlite3.connect(sys.argv[1])
out = sys.argv[2]

def jobs(run):
    return db.execute("SELECT job_id, label, status, wall_s, info FROM jobs WHERE run_id=? ORDER BY started", (run,)).fetchall()

print("### Placement (run two-nodes-ray)\n")
print("| job | device | node (SLMBENCH_NODE_NAME) | node id | node ip | node's devices | status | wall s | queued s |")
print("|---|---|---|---|---|---|---|---|---|")
csv = ["run_id,job_id,label,status,wall_s,node_name,node_id,node_ip,node_devices,queued_s"]
for run in ("two-nodes-ray", "two-nodes-local"):
    for jid, label, st, w, info in jobs(run):
        r = json.loads(info).get("ray", {})
        if run.endswith("ray"):
            print(f"| {label} | {label.split('@')[1].split()[0]} | {r.get('node_name')} | {r.get('node_id','')[:12]} | "
                  f"{r.get('node_ip')} | {','.join(r.get('node_devices', []))} | {st} | {w:.2f} | {r.get('queued_s')} |")
        csv.append(",".join(map(str, [run, jid, f'"{label}"', st, round(w, 3), r.get("node_name", ""), r.get("node_id", ""),
                                      r.get("node_ip", ""), "+".join(r.get("node_devices", [])), r.get("queued_s", "")])))
open(f"{out}/jobs.csv", "w").write("\n".join(csv) + "\n")

q = ("SELECT job_id, device, scenario, params, metric, labels, unit, n, source, status, value FROM results "
     "WHERE run_id=? ORDER BY job_id, metric, labels")
a = {x[:-1]: x[-1] for x in db.execute(q, ("two-nodes-ray",))}
b = {x[:-1]: x[-1] for x in db.execute(q, ("two-nodes-local",))}
shared = sorted(set(a) & set(b))
same, diff = set(), set()
for k in shared:
    (same if a[k] == b[k] else diff).add(f"{k[4]} [{k[6]}]")
print(f"\n### Rows: ray vs local\n\n{len(a)} rows vs {len(b)} rows; {len(shared)} rows with the same (job, device, "
      f"scenario, params, metric, labels, unit, n, source, status) in both.\n")
for name, only in (("only in the ray run", set(a) - set(b)), ("only in the local run", set(b) - set(a))):
    if only:
        print(f"- {name}: " + ", ".join(sorted(f"{k[4]} ({k[1]} {k[2]})" for k in only)))
print(f"- values identical in every job: {', '.join(sorted(same - diff)) or '-'}")
print(f"- values differ (timings and measured memory/energy): {', '.join(sorted(diff - same)) or '-'}")
if same & diff:
    print(f"- equal in some jobs only: {', '.join(sorted(same & diff))}")

print("\n### Overhead per job (suite `overhead`: 6 jobs, tiny model, node-a = this CPU, 2 threads)\n")
print("| run | executor | jobs | sum of job wall s | median job wall s | run wall s (created→finished) |")
print("|---|---|---|---|---|---|")
per = {}
for run, created, finished in db.execute("SELECT run_id, created, finished FROM runs WHERE run_id LIKE 'ovh-%' ORDER BY created"):
    ws = [r[3] for r in jobs(run)]
    ex = run.split("-")[1]
    per.setdefault(ex, []).append((statistics.median(ws), (finished - created) / len(ws)))
    print(f"| {run} | {ex} | {len(ws)} | {sum(ws):.2f} | {statistics.median(ws):.2f} | {finished - created:.2f} |")
ml = statistics.mean(m for m, _ in per["local"]); mr = statistics.mean(m for m, _ in per["ray"])
tl = statistics.mean(t for _, t in per["local"]); tr = statistics.mean(t for _, t in per["ray"])
print(f"\nMedian job wall time: local {ml:.2f} s, ray {mr:.2f} s → **{mr - ml:+.2f} s per job**. "
      f"Run wall time per job (incl. the Ray executor's cluster start/stop, amortised over 6 jobs): local {tl:.2f} s, "
      f"ray {tr:.2f} s → {tr - tl:+.2f} s per job.")
