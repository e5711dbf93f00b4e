"""Ray executor: the jobs of one suite spread over the machines of a device farm, placed by device.

    slmbench node --devices pi5,phone-a --address HEAD:6379   # on each farm machine (head: omit --address)
    slmbench run SUITE --executor ray --address HEAD:6379      # on the driver; no --address: a local cluster

The driver runs on a node of the cluster (Ray's rule for ray.init(address=HOST:PORT)); from elsewhere, Ray Client:
--address ray://HEAD:10001.

Placement. A node advertises each device it owns as a Ray custom resource `device:NAME` (amount 1), set when the
node starts (`ray start --resources '{"device:pi5": 1}'`; `slmbench node` writes that line; SLMBENCH_NODE_NAME in
its environment names the node in each job's info). Each job asks for
`device:<job.device>: 1`, so Ray runs it only on a node that owns the device, and one job per device at a time.
A `cpu`-adapter job measures the node's own cores, so it also reserves them (num_cpus = its threads, else all the
node's CPUs): two measuring jobs never share a node's cores. Jobs on other adapters (cuda, cloud, a phone driven
from the host) reserve one CPU for the host side.

Isolation is unchanged. The Ray task is a thin wrapper: it runs the job through executors.local.run_job_process,
so the job still gets its own fresh process, timeout and memory cap, and dies with the Ray worker (PDEATHSIG).

Results stream back. The driver waits on all submitted tasks and yields each result as it finishes; the runner
records it in the driver's store at once, so resume works as with the local executor (only jobs with no final
record are submitted again). The job's log comes back with its result and is written to the driver's log dir.

Dead nodes. A node that dies mid-job kills its Ray worker; Ray retries the task (MAX_RETRIES) on another node that
owns the device. If none is alive (for ORPHAN_GRACE_S), the driver cancels the task and records the job as
`crashed` with the reason; a task that fails on every try is recorded `crashed` with Ray's error. Never dropped.

Artifacts: a shared cache path, not the object store. Model artifacts are large (SmolLM2-135M fp32: 538 MB; GGUFs,
built students) and are already content-addressed and written atomically in SLMBENCH_CACHE_DIR (factory/cache.py),
so every node points SLMBENCH_CACHE_DIR at the same shared mount (NFS, a farm's file server): the artifact is
built once and read by all, and stays there across runs. Ray's object store would copy each artifact into every
node's shared memory (RAM that the measured model needs: it would distort the memory numbers of a phone-sized
device), spill or evict under a small store, and vanish with the cluster — so every run would ship it again. It
carries only what is small and per-run: the job spec, the driver's device profile, and the result with its log.
Before the jobs, one Ray task per model that needs building (SOURCES_TO_PREBUILD) builds it on some node, so nodes
sharing the cache never build it concurrently; a node with a private cache still builds it itself on first use.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..contracts.result import JobResult
from ..errors import UserError

MAX_RETRIES = 1  # node or worker death: run the job once more, on a node that still owns the device
POLL_S = 0.5
ORPHAN_GRACE_S = 5.0  # a device with no live node for this long: its jobs can never run; record them crashed
OBJECT_STORE_BYTES = 100 * 2**20  # specs, results and logs only; Ray's default (30% of RAM) is far too much
LOG_TAIL_BYTES = 256 * 1024
SOURCES_TO_PREBUILD = ("smollm2", "recipe")  # sources that build a cached artifact (random/hf need nothing)


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("the ray executor needs Ray, which is not installed: pip install 'slmbench[ray]'",
                        field="--executor")


def resource(device: str) -> str:
    return f"device:{device}"


# --- on the node ------------------------------------------------------------------------------------------------

def _run_on_node(job_json: dict, profile: dict) -> dict:
    """One job on this node, in its own process (run_job_process); returns its result, where it ran, its log."""
    import ray
    from ..adapters import load_profile
    from ..settings import cache_dir
    from ..plan import Job
    from .place import run_one
    t0 = time.monotonic()
    job = Job.from_json(job_json)
    where = {"executor": "ray", "node_id": ray.get_runtime_context().get_node_id(),
             "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
             "node_name": os.environ.get("SLMBENCH_NODE_NAME"), "cache_dir": str(cache_dir())}
    try:
        here = load_profile(job.device).model_dump()
    except UserError as e:
        here = e.line()
    if here != profile:  # a node with another profile under the same name would measure something else
        return {"result": JobResult("error", f"device profile {job.device!r} on node {where['hostname']} differs "
                                    f"from the driver's ({here if isinstance(here, str) else 'other values'}); "
                                    "install the same devices/ on every node", [], {"ray": where}).to_dict(),
                "log": "", "task_s": 0.0}
    from .bandwidth import ensure_bandwidth
    ensure_bandwidth([job])  # this node's figure for rooflines (cached per host, as local)
    with tempfile.TemporaryDirectory(prefix="slmbench-ray-") as d:
        res = run_one(job, Path(d))  # an ssh device's job runs on that device, driven from this node
        log = Path(d) / f"{job.key}.log"
        text = log.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace") if log.is_file() else ""
    return {"result": res.with_info(ray=where).to_dict(), "log": text,
            "task_s": time.monotonic() - t0}


def _prebuild_on_node(spec_json: dict) -> str:
    """Build (or find) one model's cached artifact, in its own process, so the Ray worker stays small."""
    code = ("import json, sys; from slmbench import models; from slmbench.plan import ModelSpec; "
            "models.resolve(ModelSpec(**json.loads(sys.argv[1])), progress=lambda m: print(m, file=sys.stderr))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(spec_json)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError((r.stderr.strip().splitlines() or ["exit code %d" % r.returncode])[-1])
    return socket.gethostname()


# --- on the driver ----------------------------------------------------------------------------------------------

class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, jobs: list | None = None):
        self.address, self.jobs, self.pending = address, list(jobs or []), {}

    def __enter__(self):
        import ray
        from ..adapters import load_profile
        devices = sorted({j.device for j in self.jobs})
        self.profiles = {d: load_profile(d) for d in devices}
        quiet = dict(logging_level="WARNING", log_to_driver=False, configure_logging=True)
        try:
            if self.address:
                _token_auth_like_ray_start()
                ray.init(address=self.address, **quiet)
            else:  # a fresh local cluster whose one node owns every device of the suite (what `local` runs on)
                ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False,
                         resources={resource(d): 1 for d in devices}, object_store_memory=OBJECT_STORE_BYTES,
                         **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot connect to the Ray cluster: {str(e).splitlines()[0]}",
                            field="--address" if self.address else "--executor")
        try:
            self._refresh_nodes()
            missing = [d for d in devices if not self._cpus(d)[0]]
            if missing:
                where = f"at {self.address}" if self.address else "(local)"
                raise UserError(f"no node of the Ray cluster {where} advertises device {missing[0]!r} (resource "
                                f"{resource(missing[0])}); start one: slmbench node --devices {missing[0]} "
                                f"--address {self.address or 'HEAD:PORT'}", field="devices")
        except BaseException:
            ray.shutdown()
            raise
        return self

    def __exit__(self, *exc):
        import ray
        for ref in self.pending:  # ^C or an error on the driver: stop what is still queued or running
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or its node is gone
                pass
        ray.shutdown()
        return False

    def _refresh_nodes(self) -> None:
        import ray
        self.nodes = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        self.nodes_at = time.monotonic()

    def _cpus(self, device: str) -> tuple[int, int]:
        """(live nodes owning the device, fewest CPUs among them)."""
        owners = [n for n in self.nodes.values() if n["Resources"].get(resource(device), 0) >= 1]
        return len(owners), int(min((n["Resources"].get("CPU", 0) for n in owners), default=0))

    def _num_cpus(self, job) -> int:
        node_cpus = self._cpus(job.device)[1]
        if self.profiles[job.device].adapter == "cpu":  # it measures these cores: reserve them
            return min(job.variant.threads or job.device_threads or node_cpus, node_cpus)
        return min(1, node_cpus)

    def _prebuild(self, jobs: list) -> None:
        import ray
        specs = {j.model.name: j.model for j in jobs if j.model.source in SOURCES_TO_PREBUILD}
        if not specs:
            return
        task = ray.remote(_prebuild_on_node).options(num_cpus=0, max_retries=MAX_RETRIES)
        refs = {task.remote(s.model_dump()): name for name, s in specs.items()}
        for ref, name in refs.items():
            try:
                ray.get(ref)
            except ray.exceptions.RayError as e:  # the jobs will say why they cannot load it
                print(f"warning: building model {name!r} on the cluster failed: {_first_line(e)}", file=sys.stderr)

    def run(self, jobs: list, log_dir: Path, starting=lambda i, job: None, progress=lambda job, msg: None):
        import ray
        self._prebuild(jobs)
        task = ray.remote(_run_on_node)
        for i, job in enumerate(jobs):  # all at once: Ray queues each on the nodes that own its device
            starting(i, job)
            ref = task.options(num_cpus=self._num_cpus(job), resources={resource(job.device): 1},
                               max_retries=MAX_RETRIES, name=f"slmbench:{job.key}").remote(
                job.to_json(), self.profiles[job.device].model_dump())
            self.pending[ref] = (job, time.time())
        orphaned_since: dict[str, float] = {}
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                job, submitted = self.pending.pop(ref)
                yield (job, *self._collect(ref, job, submitted, log_dir))
            if time.monotonic() - self.nodes_at > POLL_S:
                yield from self._orphans(orphaned_since)

    def _collect(self, ref, job, submitted: float, log_dir: Path) -> tuple[float, tuple]:
        import ray
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as e:  # node/worker died on every try, or the wrapper itself failed
            return submitted, JobResult("crashed", f"ray: {type(e).__name__}: {_first_line(e)}", [],
                                        {"ray": {"executor": "ray", "error": str(e)[-2000:]}})
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{job.key}.log").write_text(out["log"])
        res = JobResult.from_dict(out["result"])
        info = res.info
        node = self.nodes.get(info["ray"]["node_id"]) or {}
        info["ray"]["node_ip"] = node.get("NodeManagerAddress") or info["ray"]["node_ip"]  # as the cluster knows it
        info["ray"]["node_devices"] = sorted(k.split(":", 1)[1] for k in node.get("Resources", {})
                                             if k.startswith("device:"))
        # wall time as the job ran (node's clock-free duration), not the time it waited in the queue
        started = max(submitted, time.time() - out["task_s"])
        info["ray"]["queued_s"] = round(started - submitted, 3)
        return started, res

    def _orphans(self, since: dict):
        """Jobs whose device no live node owns any more (its node died): cancel and record, after a grace."""
        import ray
        self._refresh_nodes()
        now = time.monotonic()
        for ref, (job, submitted) in list(self.pending.items()):
            if self._cpus(job.device)[0]:
                since.pop(job.device, None)
                continue
            if now - since.setdefault(job.device, now) < ORPHAN_GRACE_S:
                continue
            ray.cancel(ref, force=True)
            del self.pending[ref]
            yield job, submitted, JobResult(
                "crashed", f"no live node owns device {job.device!r} any more (its node died or left; Ray retries a "
                f"job only on a node advertising {resource(job.device)})", [], {"ray": {"executor": "ray",
                                                                                        "orphaned": True}})


def _token_auth_like_ray_start() -> None:
    """`ray start` turns token auth on when a token exists (~/.ray/auth_token, which Ray writes for any new local
    cluster); ray.init(address=...) does not, and is then refused. Decide the way `ray start` does."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import \
            maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:300]


# --- node helper (slmbench node) --------------------------------------------------------------------------------

def node_command(devices: list[str], address: str | None, num_cpus: int | None = None, block: bool = False,
                 port: int = 6379, object_store_mb: int = 100, ip: str | None = None) -> list[str]:
    """The `ray start` line for a farm node that owns `devices` (a head when no address is given)."""
    from ..adapters import load_profile
    for i, d in enumerate(devices):
        load_profile(d, field=f"--devices[{i}]")  # a typo here would leave jobs waiting for a device nobody has
    _token_auth_like_ray_start()  # `ray start --address` (a joining node) does not, and is refused by its head
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start",
           "--resources", json.dumps({resource(d): 1 for d in devices}),
           "--object-store-memory", str(object_store_mb * 2**20)]
    cmd += ["--address", address] if address else ["--head", "--port", str(port), "--include-dashboard", "false"]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if ip:  # the address other nodes reach this one at (a machine with several interfaces)
        cmd += ["--node-ip-address", ip]
    return cmd + (["--block"] if block else [])
