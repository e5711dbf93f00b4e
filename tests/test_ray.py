"""The Ray executor on a real two-node Ray cluster on 127.0.0.1: each node advertises its own device (node-a on the
head, node-b on a second node), jobs land on the node that owns their device, rows equal a local run's apart from
timings, resume skips finished jobs, and a node killed mid-job gets its job retried on another node that owns the
device — or recorded crashed when none is left — never dropped. Skipped when Ray is not installed."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from conftest import CACHE_DIR, FAST, REPO, TINY_MODEL, cli_env, run_cli

# Ray's single-machine mode, read when ray is imported: every node, and the driver, on 127.0.0.1 (on Linux Ray
# would otherwise pick the host's address)
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
if "ray" not in sys.modules:
    os.environ.update(LOOPBACK)
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow
NODE = dict(num_cpus=1, object_store_memory=80 * 2**20)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """Head (device node-a) + a second node (device node-b); both profiles are the local CPU under another name."""
    devs = tmp_path_factory.mktemp("devices")
    for name in ("node-a", "node-b", "node-c", "node-z"):
        prof = yaml.safe_load((REPO / "devices" / "local-cpu.yaml").read_text())
        (devs / f"{name}.yaml").write_text(yaml.safe_dump({**prof, "name": name}))
    env = {"SLMBENCH_DEVICES_DIR": str(devs), "SLMBENCH_CACHE_DIR": CACHE_DIR, **LOOPBACK}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the nodes' processes (and so the jobs) inherit these, as a farm node's would
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "resources": {"device:node-a": 1},
                                                            "include_dashboard": False})
    try:
        b = cluster.add_node(**NODE, resources={"device:node-b": 1})
        cluster.wait_for_nodes()
        yield {"cluster": cluster, "env": env, "a": cluster.head_node.node_id, "b": b.node_id,
               "ip": cluster.head_node.node_ip_address}
    finally:
        cluster.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _suite(tmp_path, name, devices, scenarios, **settings):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "settings": {**FAST, **settings}, "models": [TINY_MODEL],
                                 "devices": [{"name": d, "threads": 1} for d in devices], "scenarios": scenarios}))
    return p


def _jobs(out, run_id):
    db = sqlite3.connect(out / "results.sqlite")
    try:
        rows = db.execute("SELECT job_id, spec, status, error, started, info FROM jobs WHERE run_id=?", (run_id,))
        return {r[0]: {"device": json.loads(r[1])["device"], "kind": json.loads(r[1])["params"].get("kind"),
                       "status": r[2], "error": r[3], "started": r[4], "info": json.loads(r[5])} for r in rows}
    finally:
        db.close()


def _rows(out, run_id):
    db = sqlite3.connect(out / "results.sqlite")
    try:
        return db.execute("SELECT job_id, device, scenario, params, metric, labels, unit, n, source, status, "
                          "value FROM results WHERE run_id=? ORDER BY job_id, metric, labels", (run_id,)).fetchall()
    finally:
        db.close()


SCENARIOS = [{"name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 4}},
             {"name": "memory", "params": {"prompt_tokens": 8, "gen_tokens": 4}}]
COUNTS = {"weights_mb", "params_m", "kv_bytes_per_token", "kv_bytes_per_token_formula"}  # not measured: equal


def test_jobs_land_on_the_node_owning_their_device_and_rows_equal_a_local_run(farm, tmp_path):
    suite, out = _suite(tmp_path, "two-nodes", ["node-a", "node-b"], SCENARIOS), tmp_path / "out"
    addr = farm["cluster"].address
    rc, _, err = run_cli("run", suite, "--out", out, "--run-id", "ray", "--executor", "ray", "--address", addr,
                         env=farm["env"])
    assert rc == 0, err
    jobs = _jobs(out, "ray")
    assert len(jobs) == 4 and {j["status"] for j in jobs.values()} == {"ok"}
    for j in jobs.values():
        where = j["info"]["ray"]
        assert where["node_id"] == farm["a" if j["device"] == "node-a" else "b"], (j["device"], where)
        assert where["node_devices"] == [j["device"]] and where["node_ip"] == farm["ip"]
        assert (out / "logs" / "ray" / f"{next(k for k, v in jobs.items() if v is j)}.log").is_file()

    rc, _, err = run_cli("run", suite, "--out", out, "--run-id", "local", env=farm["env"])
    assert rc == 0, err
    ray_rows, local_rows = _rows(out, "ray"), _rows(out, "local")
    assert [r[:-1] for r in ray_rows] == [r[:-1] for r in local_rows]  # same jobs, metrics, units, n, sources
    counts = [(r, l) for r, l in zip(ray_rows, local_rows) if r[4] in COUNTS]
    assert counts and all(r[-1] == l[-1] for r, l in counts), counts

    before = {k: j["started"] for k, j in jobs.items()}  # resume: every job final, nothing runs again
    rc, _, err = run_cli("run", suite, "--out", out, "--run-id", "ray", "--executor", "ray", "--address", addr,
                         env=farm["env"])
    assert rc == 0 and "4 already done" in err, err
    assert {k: j["started"] for k, j in _jobs(out, "ray").items()} == before


def _job_process_under(node) -> bool:
    raylet = node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    try:
        return any("slmbench.executors.worker" in " ".join(c.cmdline())
                   for c in psutil.Process(raylet).children(recursive=True))
    except psutil.Error:
        return False


def _run_and_kill_mid_job(farm, suite, out, run_id, nodes):
    """Start the run; as soon as a job process runs under one of `nodes`, kill that node (no goodbye)."""
    proc = subprocess.Popen([sys.executable, "-m", "slmbench.cli", "run", str(suite), "--out", str(out),
                             "--run-id", run_id, "--executor", "ray", "--address", farm["cluster"].address],
                            cwd=REPO, env=cli_env(**farm["env"]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    t0, victim = time.monotonic(), None
    while victim is None and time.monotonic() - t0 < 90 and proc.poll() is None:
        victim = next((n for n in nodes if _job_process_under(n)), None)
        time.sleep(0.05)
    assert victim is not None, "no job process appeared on the device's nodes"
    farm["cluster"].remove_node(victim, allow_graceful=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return victim


def test_a_node_dying_mid_job_gets_the_job_retried_elsewhere_or_recorded_crashed(farm, tmp_path):
    c1, c2 = (farm["cluster"].add_node(**NODE, resources={"device:node-c": 1}) for _ in range(2))
    farm["cluster"].wait_for_nodes()
    # two nodes own node-c: the killed node's job runs again on the other one (where it hangs to its timeout:
    # a final record from the survivor, with no model to load on the shared cores)
    hang = [{"name": "fault", "params": {"kind": "hang"}}]
    suite, out = _suite(tmp_path, "retry", ["node-c"], hang, timeout_s=8), tmp_path / "out"
    victim = _run_and_kill_mid_job(farm, suite, out, "retry", [c1, c2])
    (job,) = _jobs(out, "retry").values()
    survivor = c2 if victim is c1 else c1
    assert job["status"] == "timeout" and job["info"]["ray"]["node_id"] == survivor.node_id != victim.node_id

    # the last node owning node-c dies mid-job: the job is recorded crashed, saying why; the run still finishes
    suite = _suite(tmp_path, "orphan", ["node-c"], hang, timeout_s=300)
    _run_and_kill_mid_job(farm, suite, out, "orphan", [survivor])
    (job,) = _jobs(out, "orphan").values()
    assert job["status"] == "crashed" and "node-c" in job["error"], job
    db = sqlite3.connect(out / "results.sqlite")
    assert db.execute("SELECT status FROM runs WHERE run_id='orphan'").fetchone() == ("finished",)
    db.close()


def test_a_device_no_node_owns_is_refused_before_any_work(farm, tmp_path):
    suite, out = _suite(tmp_path, "nobody", ["node-a", "node-z"], SCENARIOS[:1]), tmp_path / "out"
    rc, _, err = run_cli("run", suite, "--out", out, "--executor", "ray", "--address", farm["cluster"].address,
                         env=farm["env"])
    assert rc == 2 and "no node of the Ray cluster" in err and "device:node-z" in err, err
    assert "slmbench node --devices node-z" in err


def test_without_ray_installed_the_ray_executor_fails_with_a_clear_message(tmp_path):
    fake = tmp_path / "noray" / "ray"  # shadows the installed package: `import ray` fails as if it were absent
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    suite = _suite(tmp_path, "any", ["local-cpu"], SCENARIOS[:1])
    rc, _, err = run_cli("run", suite, "--out", tmp_path / "out", "--executor", "ray",
                         env={"PYTHONPATH": str(fake.parent), "SLMBENCH_DEVICES_DIR": str(REPO / "devices")})
    assert rc == 2 and "pip install 'slmbench[ray]'" in err, err
    rc, _, err = run_cli("run", suite, "--out", tmp_path / "out", "--address", "127.0.0.1:1",
                         env={"SLMBENCH_DEVICES_DIR": str(REPO / "devices")})
    assert rc == 2 and "--address is for --executor ray" in err, err
