"""The plugin contracts, as a newcomer meets them: a third-party package (tests/plugins/slmbench_demo: one backend,
one device adapter, one scenario — one file each) installed through entry points only, then a real suite run on
it; and the registry's rules (duplicates, non-subclasses, undeclared capabilities, unknown names)."""
from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import FAST, REPO, TINY_MODEL, run_cli

DEMO = Path(__file__).parent / "plugins" / "slmbench_demo"
ENTRY_POINTS = """[slmbench.backends]
bigram = slmbench_demo.bigram:BigramEngine

[slmbench.adapters]
pinned = slmbench_demo.pinned:PinnedCpu

[slmbench.scenarios]
burst = slmbench_demo.burst:Burst
"""


@pytest.fixture
def demo_site(tmp_path) -> Path:
    """The demo package as pip would install it: the package plus a dist-info with entry_points.txt."""
    site = tmp_path / "site"
    shutil.copytree(DEMO, site / "slmbench_demo")
    info = site / "slmbench_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slmbench-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    devices = tmp_path / "devices"
    shutil.copytree(REPO / "devices", devices)
    (devices / "pinned-1.yaml").write_text(yaml.safe_dump({"name": "pinned-1", "adapter": "pinned", "cores": 1}))
    return site


def _env(site: Path) -> dict:
    return {"PYTHONPATH": str(site), "SLMBENCH_DEVICES_DIR": str(site.parent / "devices")}


def test_third_party_plugins_register_through_entry_points(demo_site):
    rc, out, err = run_cli("plugins", env=_env(demo_site))
    assert rc == 0, err
    lines = {ln.split()[0] + " " + ln.split()[1]: ln for ln in out.splitlines()}
    assert "slmbench_demo.bigram" in lines["backend bigram"] and "knobs: smoothing" in lines["backend bigram"]
    assert "slmbench_demo.pinned" in lines["adapter pinned"]
    assert "slmbench_demo.burst" in lines["scenario burst"] and "needs: generate" in lines["scenario burst"]
    for builtin in ("backend torch", "backend llamacpp", "backend openai", "adapter cpu", "scenario latency",
                    "source smollm2"):
        assert builtin in lines
    rc, out, _ = run_cli("plugins")  # without the package on the path, nothing of it is known
    assert rc == 0 and "bigram" not in out


def test_suite_runs_on_plugins_and_records_what_they_cannot_do(demo_site, tmp_path):
    """A plugin backend, adapter and scenario beside the built-ins, in one matrix. What a backend lacks (bigram has
    no KV cache or weights: the memory scenario) is recorded unsupported with the reason, never crashed."""
    suite = tmp_path / "plugins.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "plugins", "settings": FAST, "models": [TINY_MODEL], "devices": ["pinned-1"],
        "matrix": {"backend": ["bigram", "torch"]},
        "scenarios": [{"name": "burst", "params": {"gen_tokens": 8}},
                      {"name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 4}},
                      {"name": "memory", "params": {"prompt_tokens": 8, "gen_tokens": 4}}]}))
    rc, out, err = run_cli("validate", suite, "-v", env=_env(demo_site))
    assert rc == 0, err
    assert "6 jobs; 1 recorded unsupported without running" in out, out
    rc, out, err = run_cli("run", suite, "--out", tmp_path / "out", "--run-id", "p1", env=_env(demo_site))
    assert rc == 0, err
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    jobs = {(lab.split("[")[1].split("]")[0], lab.split()[-1].split("(")[0]): (st, e) for lab, st, e in
            db.execute("SELECT label, status, error FROM jobs WHERE run_id='p1'")}
    assert jobs[("backend=bigram", "memory")][0] == "unsupported"
    assert "kv_cache" in jobs[("backend=bigram", "memory")][1] and "bigram" in jobs[("backend=bigram", "memory")][1]
    for k, (st, e) in jobs.items():
        if k != ("backend=bigram", "memory"):
            assert st == "ok", (k, e)
    tok_s = db.execute("SELECT value FROM results WHERE run_id='p1' AND metric='burst_tok_s'").fetchall()
    assert len(tok_s) == 2 and all(v > 0 for (v,) in tok_s)
    info = db.execute("SELECT info FROM jobs WHERE run_id='p1' AND label LIKE '%bigram%burst%'").fetchone()[0]
    assert '"adapter": "pinned"' in info and '"threads": 1' in info  # the adapter's own facts, effective threads


def test_plugin_knobs_are_validated_by_their_backend(demo_site, tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text(yaml.safe_dump({"name": "bad", "models": [TINY_MODEL], "devices": ["pinned-1"],
                                     "matrix": {"backend": ["bigram"], "smoothing": [-1]},
                                     "scenarios": ["burst"]}))
    rc, _, err = run_cli("validate", suite, env=_env(demo_site))
    assert rc == 2 and err.count("\n") == 1, err
    assert "matrix.smoothing[0]" in err and "greater than or equal to 0" in err and "bigram" in err, err


# --- the registry's rules -----------------------------------------------------------------------------------------

_SERIAL = itertools.count()


def _generate_only(name: str):
    """A minimal engine that can only generate (nothing else declared, nothing else defined)."""
    from slmbench.contracts import Engine
    from slmbench.contracts.engine import GENERATE

    class GenerateOnly(Engine):
        capabilities = frozenset({GENERATE})

        @classmethod
        def load(cls, *a, **k):
            return cls()

        def describe(self):
            return {}

        def generate(self, ids, n_new, clock=None, past=None):
            return []
    GenerateOnly.name = name
    GenerateOnly.__qualname__ = f"GenerateOnly{next(_SERIAL)}"  # each call a distinct class, as two plugins are
    return GenerateOnly


def test_registry_refuses_duplicates_non_subclasses_and_undeclared_capabilities():
    from slmbench.contracts import Engine, Registry, RegistryError, Scenario
    from slmbench.contracts.engine import GENERATE, LOGLIKELIHOOD
    from slmbench.errors import UserError
    reg = Registry("backend", Engine, "slmbench.backends")
    A = _generate_only("dup")
    reg.register(A)
    reg.register(A)  # the same class again (a module imported twice) is harmless
    B = _generate_only("dup")  # another class under a taken name
    with pytest.raises(RegistryError, match="duplicate backend 'dup'"):
        reg.register(B)
    with pytest.raises(RegistryError, match="not a subclass of Engine"):
        reg.register(type("S", (Scenario,), {"name": "s"}))
    with pytest.raises(TypeError, match="declares 'loglikelihood' but does not define loglikelihood"):
        reg.register(type("C", (A,), {"name": "c", "capabilities": frozenset({GENERATE, LOGLIKELIHOOD})}))
    with pytest.raises(UserError, match=r"unknown backend 'nope' \(known: .*dup"):
        reg.get("nope")


def test_an_engine_lacking_a_capability_says_so_instead_of_crashing():
    from slmbench.contracts import SCENARIOS
    from slmbench.errors import Unsupported
    OnlyGen = _generate_only("onlygen")
    with pytest.raises(Unsupported, match="no 'weights' capability"):
        OnlyGen().weight_bytes()
    from slmbench.adapters.cpu import CpuAdapter
    why = SCENARIOS.get("memory").missing(OnlyGen, CpuAdapter)
    assert "prefill" in why and "kv_cache" in why and "weights" in why
    assert SCENARIOS.get("latency").missing(OnlyGen, CpuAdapter) == (
        "scenario 'latency' needs prefill; backend 'onlygen' has generate")
