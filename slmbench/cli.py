"""slmbench command line: run, validate, build, results, report. Bad input → one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .errors import UserError
from .settings import default_out_dir


def _out(p) -> Path:
    return Path(p) if p else default_out_dir()


def cmd_validate(a) -> int:
    from .plan import load_suite, plan
    suite = load_suite(a.suite, quick=a.quick)
    p = plan(suite, Path(a.suite).resolve().parent)
    print(f"{a.suite}: ok — suite '{suite.name}', {p.summary()}")
    if a.verbose:
        for j in p.jobs:
            print(f"  {j.key}  {j.label}" + (f"  [unsupported: {j.unsupported}]" if j.unsupported else ""))
    return 0


def cmd_plugins(a) -> int:
    """Every registered backend, device adapter, scenario and model source, with what each declares."""
    from .contracts import ADAPTERS, BACKENDS, SCENARIOS, SOURCES
    for name, c in BACKENDS.all().items():
        print(f"backend  {name:12} needs device: {', '.join(sorted(c.requires_device))}; knobs: "
              f"{', '.join(c.Knobs.model_fields) or '-'}; can: {', '.join(sorted(c.capabilities))}  ({c.__module__})")
    for name, c in ADAPTERS.all().items():
        print(f"adapter  {name:12} can: {', '.join(sorted(c.capabilities)) or '-'}  ({c.__module__})")
    for name, c in SCENARIOS.all().items():
        needs = sorted(c.requires) + [f"device:{x}" for x in sorted(c.requires_device)]
        print(f"scenario {name:12} params: {', '.join(c.Params.model_fields) or '-'}; needs: "
              f"{', '.join(needs) or '-'}  ({c.__module__})")
    for name, c in SOURCES.all().items():
        print(f"source   {name:12} fields: {', '.join(sorted(c.fields)) or '-'}  ({c.__module__})")
    return 0


def cmd_run(a) -> int:
    from rich.console import Console
    from .runner import run_suite
    console = Console(stderr=True)
    out = _out(a.out)
    if a.baseline and a.baseline not in ("last", "prev"):  # a bad baseline is bad input: say so before running
        _open_store(out).check_ref(a.baseline, "--baseline")
    run_id = run_suite(a.suite, out, run_id=a.run_id, resume=a.resume, console=console, force=a.force,
                       executor=a.executor, address=a.address, quick=a.quick)
    from .store import Store
    from .report.render import to_rich
    st = Store(out)
    df = st.rows(run_id)
    console.print(to_rich(df, title=f"run {run_id}"))
    from .report.tables import failures, sources_note
    for n in sources_note(df):
        console.print(f"[dim]{n}[/]")
    fails = failures(df)
    console.print(f"{len(st.jobs(run_id))} jobs, {len(fails)} not ok. Report: slmbench report --run {run_id}"
                  + (f" --out {out}" if a.out else ""))
    if a.baseline:
        return _after_run(st, run_id, a, out, console)
    return 0


def cmd_bench(a) -> int:
    """One model in one line: a suite built from the arguments, validated and run as a file is (cmd_run)."""
    from . import bench
    suite = bench.from_args(a)
    if a.print_suite:
        bench.validate(suite)
        sys.stdout.write(bench.to_yaml(suite))
        return 0
    path = bench.write_suite(suite, _out(a.out))
    print(f"suite {path} (rerun: slmbench run {path})", file=sys.stderr)
    return cmd_run(argparse.Namespace(suite=str(path), out=a.out, quick=False, run_id=None, resume=False,
                                      baseline=None, force=False, executor="local", address=None))


def _after_run(st, run_id: str, a, out: Path, console) -> int:
    """`slmbench run SUITE --baseline BASE|last`: compare the finished run with its baseline."""
    suite = (st.run_meta(run_id) or {}).get("suite")
    try:
        base = st.resolve(a.baseline, suite=suite, before=run_id, field="--baseline")
    except UserError as e:
        if a.baseline in ("last", "prev"):  # the first night has nothing to compare with: not an error
            console.print(f"no baseline: {e.message}", markup=False)
            return 0
        raise
    console.print(f"comparing with baseline {base}", markup=False)
    return _report_comparison(st, base, run_id, a, out, console, md_stdout=False)


def cmd_compare(a) -> int:
    """Exit 1 when a regression is confirmed, so a CI job fails."""
    from rich.console import Console
    out = _out(a.out)
    st = _open_store(out)
    st.check_ref(a.base, "BASE")
    st.check_ref(a.new, "NEW")
    new = st.resolve(a.new, field="NEW")
    suite = st.run_meta(new)["suite"]
    base = st.resolve(a.base, suite=suite, before=new if a.base in ("last", "prev") else None, field="BASE")
    return _report_comparison(st, base, new, a, out, Console(stderr=True))


def _report_comparison(st, base: str, new: str, a, out: Path, console, md_stdout: bool = True) -> int:
    """Compare, publish (Markdown, HTML, terminal lines); the exit code (1: a regression confirmed)."""
    from .analysis.regression import exit_code
    from .report.regression import publish
    cmp = _compare(st, base, new, a.threshold, a.rerun_suspects, out, console, getattr(a, "confirm_ab", 0))
    publish(cmp, a.md, a.html, console, md_stdout)
    return exit_code(cmp)


def _compare(st, base: str, new: str, thresholds, rerun_suspects: bool, out: Path, console, confirm_ab: int = 0):
    """The verdicts (analysis), suspects run again (runner) and decided again (analysis), the nightly trends.
    confirm_ab: that many interleaved pairs of the base commit's code and this tree per suspect job instead."""
    from .analysis import regression as reg
    from .analysis.trends import detect
    from .regression_rules import merge_rules, parse_threshold_args
    bmeta, nmeta = st.run_meta(base) or {}, st.run_meta(new) or {}
    rules = merge_rules(_suite_rules(nmeta.get("suite_path")), parse_threshold_args(thresholds))
    base_rows = st.rows(base, samples=True)
    cmp = reg.compare(base, new, base_rows, st.rows(new, samples=True), rules,
                      (bmeta.get("suite", ""), nmeta.get("suite", "")), (st.manifest(base), st.manifest(new)))
    if confirm_ab and reg.suspects(cmp):
        from .executors.interleave import rerun_ab
        from .settings import REPO_DIR
        commit = (cmp.base_manifest.get("git") or {}).get("commit")
        if not commit:
            raise UserError(f"run {base} records no git commit: its code cannot be rerun", field="--confirm-ab")
        specs = {j: spec for j, (_, spec) in st.job_specs(new, reg.suspects(cmp)).items()}
        base_specs = {j: spec for j, (_, spec) in st.job_specs(base, list(specs)).items()}  # same key, base's form
        per_job = rerun_ab(specs, commit, REPO_DIR, confirm_ab, base_specs,
                           progress=lambda m: console.print(m, markup=False, highlight=False))
        reg.confirm_paired(cmp, reg.ab_pairs(cmp, per_job), rules, label=f"A/B {commit[:10]} vs this tree")
    elif rerun_suspects and reg.suspects(cmp):
        rid = _rerun_suspects(st, cmp, out, console)
        reg.confirm(cmp, rid, base_rows, st.rows(rid, samples=True), rules)
    runs = st.suite_runs(cmp.suite, upto=new) if cmp.suite else None
    if runs is not None and len(runs) >= 2:
        commits = {r: (st.manifest(r).get("git") or {}).get("commit") for r in runs["run_id"]}
        cmp.trends = detect(runs, st.rows(list(runs["run_id"]), samples=True), commits, rules)
    return cmp


def _rerun_suspects(st, cmp, out: Path, console) -> str:
    """Each suspect job once more, from its stored spec, as run `<new>-rerun`, through the executor (and cluster)
    the new run used; a run that recorded none ran locally."""
    from .analysis.regression import suspects
    from .plan import Job
    from .runner import rerun_jobs
    rid = f"{cmp.new_run}-rerun"
    jobs = [Job.from_json(spec) for _, spec in st.job_specs(cmp.new_run, suspects(cmp)).values()]
    man = cmp.new_manifest
    rerun_jobs(st, rid, f"{cmp.suite}~rerun", jobs, out, man.get("executor") or "local", man.get("address"),
               rerun_of=cmp.new_run, console=console)
    return rid


def _suite_rules(suite_path: str | None) -> dict:
    """The optional `regression:` mapping of the run's suite file (read raw: it may have changed or gone since)."""
    if not suite_path or not Path(suite_path).is_file():
        return {}
    import yaml
    try:
        data = yaml.safe_load(Path(suite_path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return (data or {}).get("regression") or {} if isinstance(data, dict) else {}


def cmd_node(a) -> int:
    """Start this machine as a Ray node owning DEVICES (the head, without --address); `ray stop` ends it."""
    from .executors.ray import node_command, require_ray
    require_ray()
    cmd = node_command([d for d in a.devices.split(",") if d], a.address, a.num_cpus, a.block, ip=a.ip)
    print(" ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd)


def _pick_run(store, run_id: str | None) -> str:
    rid = run_id or store.latest_run()
    if not rid:
        raise UserError("no runs in the store yet", file=str(store.path), field="--run")
    if not store.has_run(rid):
        raise UserError(f"no run {rid!r} in the store", file=str(store.path), field="--run")
    return rid


def _open_store(out: Path):
    from .store import Store, db_path
    if not db_path(out).is_file():
        raise UserError("no results store here (run a suite first, or pass --out)", file=str(db_path(out)))
    return Store(out)


def cmd_results(a) -> int:
    st = _open_store(_out(a.out))
    df = st.rows(None if a.all else _pick_run(st, a.run), samples=a.samples)
    if a.format == "csv":
        df.to_csv(sys.stdout, index=False)
        return 0
    import json
    nested = [c for c in ("variant", "params", "labels", "samples") if c in df.columns]
    if a.format == "json":  # objects, not JSON strings inside JSON: `jq '.[].variant.quantization'` works
        rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")  # NaN is not JSON: null
        for r in rows:
            for c in nested:
                r[c] = json.loads(r[c]) if isinstance(r[c], str) else r[c]
        sys.stdout.write(json.dumps(rows, indent=1, default=str) + "\n")
        return 0
    if not a.output:
        raise UserError("parquet is binary: name a file with --output", field="--format")
    df.to_parquet(a.output, index=False)  # nested columns stay JSON text: one schema for every run
    print(f"wrote {a.output} ({len(df)} rows)", file=sys.stderr)
    return 0


def cmd_report(a) -> int:
    from .report import render
    if getattr(a, "rows", None):  # the claims report rebuilt from a shipped export, no store needed
        if not a.claims or a.claims is True:
            raise UserError("--rows needs the suite: --claims SUITE", field="--rows")
        from .report import claims as rc
        md, hp = rc.from_export(Path(a.rows), Path(a.claims), Path(a.output or "claims-from-export"))
        print(f"wrote {md} and {hp}", file=sys.stderr)
        return 0
    st = _open_store(_out(a.out))
    rid = _pick_run(st, a.run)
    if a.claims:
        return _claims_report(a, st, rid)
    to = {"md": render.to_markdown, "html": render.to_html, "json": render.to_json}[a.format]
    text = to(st.rows(rid), rid, st.manifest(rid), st.job_info(rid), cost=getattr(a, "cost", False))
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(text, encoding="utf-8")
        print(f"wrote {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(text + "\n")
    return 0


def _claims_report(a, st, rid: str) -> int:
    """`report --claims [SUITE]`: verdicts for the suite's claims from this run's rows (md + PNGs, html, json)."""
    from .report import claims as rc
    from .plan import parse_suite, suite_sha
    meta = st.run_meta(rid) or {}
    path = a.claims if a.claims is not True else meta.get("suite_path")
    if not path:
        raise UserError("no suite file recorded for this run; pass it: --claims SUITE", field="--claims")
    quick = meta.get("suite", "").endswith("-quick")
    suite = parse_suite(path, quick=quick)  # the schema only: reporting needs no models, data or devices
    if meta.get("suite") and suite.name != meta["suite"]:
        raise UserError(f"run {rid!r} is suite {meta['suite']!r}, not {suite.name!r}", file=str(path), field="--claims")
    sha = suite_sha(path, quick)
    if meta.get("suite_sha") and sha != meta["suite_sha"]:  # claims.md states what changed, too
        print(f"note: {path} changed since run {rid} (sha {meta['suite_sha']} → {sha}); its claims are scored "
              "against the rows that run stored", file=sys.stderr)
    if not suite.claims:
        raise UserError("this suite has no `claims:` section", file=str(path), field="claims")
    jobs = st.jobs(rid)
    wall = ""
    if meta.get("created") and meta.get("finished"):
        wall = (f"{jobs['wall_s'].sum() / 60:.1f} min of job time ({len(jobs)} jobs), "
                f"{(meta['finished'] - meta['created']) / 60:.1f} min from the run's start to its finish")
    dest = Path(a.output) if a.output else _out(a.out) / f"claims-{rid}"
    md, hp = rc.from_store(st, rid, str(path), dest, suite, wall)
    print(f"wrote {md} and {hp}", file=sys.stderr)
    return 0


def cmd_build(a) -> int:
    """The SLM factory: build (or find cached) the student a recipe describes; print where it is."""
    from .factory import build
    b = build(a.recipe)
    m = b.manifest
    ev, p = m["eval"], m["student"]["params"]
    print(f"{b.model_dir}\n  held-out {ev['heldout_bpb']:.4f} bits/byte (teacher {m['teacher']['heldout_bpb']:.4f}), "
          f"top-1 agreement with the teacher {ev.get('top1_agreement', float('nan')):.1%}; {p['total']:,} params "
          f"({p['active']:,} active); {m['train']['tokens_seen']:,} tokens at {m['train']['tok_s']:,.0f} tok/s; "
          f"manifest {b.path / 'manifest.json'}")
    for level, path in b.gguf.items():
        print(f"  GGUF {level}: {path}")
    return 0


def cmd_overhead(a) -> int:
    """Harness decode tok/s vs a bare engine.generate loop in this process (the overhead check); --decode-paths:
    the torch backend's decode paths (generate, exact, fast) and llama.cpp F32 where installed, interleaved, with
    their roofline fractions."""
    import json
    from .adapters import load_profile, make_adapter
    from .backends import load_engine
    from .models import resolve
    from .plan import ModelSpec, Variant
    adapter = make_adapter(load_profile(a.device), a.threads)
    adapter.setup()
    spec = ModelSpec(name="m", source=a.source, path=a.path)
    files = resolve(spec, progress=lambda m: print(m, file=sys.stderr))
    if a.decode_paths:
        from .adapters.bandwidth import ensure
        from .benchmarks.decode import format_lines
        from .benchmarks.decode import measure as measure_paths
        engines = {p: load_engine(files, Variant(decode=p), adapter) for p in ("generate", "exact", "fast")}
        import importlib.util
        if importlib.util.find_spec("llama_cpp"):  # the same fp32 weights in llama.cpp: the best other reader
            engines["llamacpp:f32"] = load_engine(files, Variant(backend="llamacpp", quantization="f32"), adapter)
        bw = ensure(adapter.threads) if "bandwidth" in adapter.capabilities else None
        r = measure_paths(engines, a.prompt_tokens, a.gen_tokens, a.pairs, bandwidth_gbs=bw and bw["gbs"])
        print("\n".join(format_lines(r)))
        print(f"({r['pairs']} interleaved pairs, prompt {a.prompt_tokens}, {a.gen_tokens} new tokens, "
              f"{adapter.threads} threads" + (f"; roofline: {bw['method']}" if bw else "") + ")")
        if a.json:
            print(json.dumps(r))
        return 0
    if a.sampler_hz:  # the power sampler's own cost on decode (benchmarks/sampler.py)
        from .benchmarks.sampler import main as sampler_main
        return sampler_main(load_engine(files, Variant(), adapter), a)
    if a.accuracy:  # grouped MC scoring vs lm-eval's hf model (benchmarks/accuracy.py)
        from .benchmarks.accuracy import main as accuracy_main
        return accuracy_main(files, adapter, a)
    if a.executorch_runner:  # the executorch backend vs ExecuTorch's TextLLMRunner on the same program
        from .benchmarks.etrunner import format_lines as et_lines
        from .benchmarks.etrunner import measure_levels as et_levels
        for r in et_levels(files, adapter, a.executorch_runner.split(","), a.prompt_tokens, a.gen_tokens, a.pairs,
                           progress=lambda m: print(m, file=sys.stderr)):
            print("\n".join(et_lines(r)))
            if a.json:
                print(json.dumps(r, default=str))
        return 0
    if a.llama_bench:
        from .benchmarks.llamabench import format_lines, measure_levels
        rs = measure_levels(files, adapter, a.llama_bench.split(","), a.prompt_tokens, a.gen_tokens, a.pairs,
                            progress=lambda m: print(m, file=sys.stderr))
        for r in rs:
            print("\n".join(format_lines(r)))
            if a.json:
                print(json.dumps(r, default=str))
        return 0
    from .benchmarks.overhead import measure
    eng = load_engine(files, Variant(), adapter)
    r = measure(eng, a.prompt_tokens, a.gen_tokens, a.pairs)
    print(f"bare engine.generate ({getattr(eng, 'decode_path', eng.name)}): {r['bare_decode_tok_s']:.2f} tok/s; "
          f"harness: {r['harness_decode_tok_s']:.2f} tok/s; "
          f"difference {100 * r['harness_vs_bare']:+.2f}% ({r['pairs']} interleaved pairs, prompt {r['prompt_tokens']}, "
          f"{r['gen_tokens']} new tokens, {adapter.threads} threads)")
    if a.json:
        print(json.dumps(r))
    return 0


def cmd_bandwidth(a) -> int:
    """Measure (or show the cached) sustained memory read bandwidth used for roofline fractions, and cross-check it
    against the best effective read rate (decode tok/s × weight bytes/token) stored runs reached on this host."""
    from .adapters.bandwidth import cached, ensure, forget, measure
    threads = a.threads or len(os.sched_getaffinity(0))
    if a.remeasure:
        forget(threads)
    bw = cached(threads) or ensure(threads)
    if not bw:
        raise UserError("the bandwidth benchmark failed to run", field="bandwidth")
    print(f"roofline: {bw['gbs']:.1f} GB/s best, {bw['median_gbs']:.1f} GB/s median — {bw['method']}")
    if a.compare_torch:
        old = measure(threads, method="torch")
        print(f"old method: {old['gbs']:.1f} GB/s best, {old['median_gbs']:.1f} GB/s median — torch float32 sum "
              f"(now measured, not cached)")
    best = _best_effective_read(a.out or default_out_dir(), threads)
    if best:
        gbs, what = best
        verdict = "ok: no stored decode reads faster" if gbs <= bw["gbs"] else \
            "EXCEEDS the roofline: the benchmark is not this machine's limit (rerun with --remeasure)"
        print(f"best effective read of a stored decode here: {gbs:.1f} GB/s ({what}) = {gbs / bw['gbs']:.2f} of the "
              f"roofline — {verdict}")
    return 0


def _best_effective_read(out, threads: int) -> tuple[float, str] | None:
    """Max over stored decode_tok_s rows of this host and thread count of tok/s × info.model.weights_per_token_bytes,
    for models whose weights are ≥ 4× the last-level cache (a cache-resident model is not bound by DRAM)."""
    import json

    from .store import Store, db_path
    if not db_path(out).is_file():
        return None
    from .adapters import host_info
    from .adapters.bandwidth import llc_bytes
    h, min_bytes = host_info(), 4 * llc_bytes()
    st = Store(out)
    best = None
    try:
        for run in st.runs()["run_id"]:
            rows = st.rows(run)
            rows = rows[(rows.metric == "decode_tok_s") & (rows.status == "ok")]
            if rows.empty:
                continue
            info = st.job_info(run)
            for r in rows.itertuples():
                i = info.get(r.job_id, {})
                dev, bpt = i.get("device", {}), i.get("model", {}).get("weights_per_token_bytes")
                if not bpt or bpt < min_bytes or i.get("threads") != threads or \
                        (dev.get("hostname"), dev.get("cpu_model")) != (h["hostname"], h["cpu_model"]):
                    continue
                gbs = r.value * bpt / 1e9
                if best is None or gbs > best[0]:
                    v = json.loads(r.variant)
                    knobs = ", ".join(f"{k} {v[k]}" for k in ("dtype", "quantization", "decode") if k in v)
                    what = (f"{r.model} on {v.get('backend')} ({knobs}), run {run}: {r.value:.1f} tok/s × "
                            f"{bpt / 1e6:.0f} MB")
                    best = (gbs, what)
    finally:
        st.close()
    return best


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slmbench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, help):
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--out", help="results directory (default ./reports, or $SLMBENCH_OUT)")
        sp.set_defaults(fn=fn)
        return sp

    for section in (_run_commands, _read_commands, _tool_commands):
        section(add)
    return p


def _run_commands(add) -> None:
    sp = add("validate", cmd_validate, "check a suite without running it")
    sp.add_argument("suite")
    sp.add_argument("-v", "--verbose", action="store_true", help="list the planned jobs")
    sp.add_argument("--quick", action="store_true", help="apply the suite's `quick:` patch (its small variant)")
    add("plugins", cmd_plugins, "list the registered backends, device adapters, scenarios and model sources")
    sp = add("run", cmd_run, "run a suite")
    sp.add_argument("suite")
    sp.add_argument("--quick", action="store_true", help="apply the suite's `quick:` patch (its small variant)")
    sp.add_argument("--run-id", help="name the run (re-using an id resumes it)")
    sp.add_argument("--resume", action="store_true", help="finish the latest run of this suite")
    _regression_args(sp)
    sp.add_argument("--baseline", metavar="BASE|last", help="compare with this run (last: the suite's previous run)")
    sp.add_argument("--force", action="store_true", help="resume even though the suite file changed")
    sp.add_argument("--executor", choices=["local", "ray"], default="local", help="local: one process per job "
                    "here; ray: each job on a Ray node that advertises its device (pip install 'slmbench[ray]')")
    sp.add_argument("--address", help="--executor ray: the cluster's head (HOST:PORT); none: start a local one")
    sp = add("bench", cmd_bench, "benchmark one model in one line: a Hub id, a GGUF file, an HF directory, smollm2")
    from .bench import add_arguments
    add_arguments(sp)
    sp = add("node", cmd_node, "start this machine as a Ray node for --executor ray, advertising its devices")
    sp.add_argument("--devices", required=True, help="comma-separated device profiles this machine owns")
    sp.add_argument("--address", help="the head to join (HOST:PORT); none: start the head here")
    sp.add_argument("--num-cpus", type=int, help="CPUs Ray may hand to jobs (default: all)")
    sp.add_argument("--ip", help="this node's address as other nodes reach it (default: Ray's guess)")
    sp.add_argument("--block", action="store_true", help="stay in the foreground until stopped")


def _read_commands(add) -> None:
    sp = add("compare", cmd_compare, "regression verdicts: NEW against BASE (exit 1 on a confirmed regression)")
    sp.add_argument("base", metavar="BASE", help="run id, or last/prev (the NEW run's suite's run before NEW)")
    sp.add_argument("new", metavar="NEW", help="run id, or last (the latest run)")
    _regression_args(sp)
    sp = add("results", cmd_results, "tidy result rows to stdout")
    sp.add_argument("--run", help="run id (default: latest)")
    sp.add_argument("--all", action="store_true", help="every run")
    sp.add_argument("--format", choices=["csv", "json", "parquet"], default="csv",
                    help="json: variant, params, labels as objects; parquet: needs --output (pandas: pd.read_parquet)")
    sp.add_argument("--output", help="write here (parquet)")
    sp.add_argument("--samples", action="store_true", help="include raw samples")
    sp = add("report", cmd_report, "render a run's report")
    sp.add_argument("--run", help="run id (default: latest)")
    sp.add_argument("--format", choices=["md", "html", "json"], default="md")
    sp.add_argument("--output", help="write to this file instead of stdout")
    sp.add_argument("--claims", nargs="?", const=True, metavar="SUITE", help="the claims report (verdicts for "
                    "the suite's `claims:`; default: the run's own suite file) into --output DIR (default "
                    "OUT/claims-RUN): claims.md + plots/, claims.html, verdicts.json")
    sp.add_argument("--cost", action="store_true", help="add the cloud-vs-device cost table (devices/, "
                    "devices/cloud/ price tables and assumptions)")
    sp.add_argument("--rows", metavar="FILE", help="with --claims SUITE: rebuild the claims report from an "
                    "export (`slmbench results --samples` CSV or Parquet; run.json beside it is read too), no store")


def _tool_commands(add) -> None:
    sp = add("bandwidth", cmd_bandwidth, "benchmark: sustained memory read bandwidth (cached per machine)")
    sp.add_argument("--threads", type=int)
    sp.add_argument("--remeasure", action="store_true", help="discard the cached figure and measure again")
    sp.add_argument("--compare-torch", action="store_true", help="also measure the old method (a torch sum)")
    sp = add("build", cmd_build, "build a student from a recipe (cached; resumes an interrupted build)")
    sp.add_argument("recipe")
    sp = add("overhead", cmd_overhead, "benchmark: harness decode tok/s vs a bare engine.generate loop "
             "(--decode-paths: torch generate / exact / fast, llama.cpp f32)")
    sp.add_argument("--source", default="smollm2", help="model source (smollm2 | hf | random)")
    sp.add_argument("--path", help="model path for source hf")
    sp.add_argument("--device", default="local-cpu")
    sp.add_argument("--threads", type=int)
    sp.add_argument("--prompt-tokens", type=int, default=128)
    sp.add_argument("--gen-tokens", type=int, default=64)
    sp.add_argument("--pairs", type=int, default=10)
    sp.add_argument("--sampler-hz", type=float, help="the power sampler's own cost: decode tok/s with vs without "
                    "it at this rate, interleaved pairs (a FAKE hwmon tree where this machine has no sensor)")
    sp.add_argument("--sensor", help="with --sampler-hz: hwmon:NAME | battery:NAME (default: the fake tree)")
    sp.add_argument("--sysfs", help="with --sensor: the sysfs root (default /sys)")
    sp.add_argument("--decode-paths", action="store_true", help="torch decode: generate, exact, fast (+ llama.cpp f32), interleaved, "
                    "with roofline fractions")
    sp.add_argument("--llama-bench", nargs="?", const="f32,q4_0", metavar="LEVELS",
                    help="llamacpp backend vs llama.cpp's llama-bench (built once from the installed "
                    "llama-cpp-python's source) on the same GGUF, alternating; GGUF levels, default f32,q4_0")
    sp.add_argument("--executorch-runner", nargs="?", const="none,8da4w", metavar="LEVELS",
                    help="executorch backend vs ExecuTorch's own TextLLMRunner on the same .pte, alternating; "
                    "levels, default none,8da4w")
    sp.add_argument("--accuracy", metavar="TASKS", help="accuracy scoring: lm-eval's hf model vs slmbench's grouped "
                    "scoring on these lm-eval tasks (comma-separated), alternating; wall time, acc, per-request Δ")
    sp.add_argument("--batch-size", type=int, default=16, help="with --accuracy: both arms' batch size")
    sp.add_argument("--limit", type=int, help="with --accuracy: items per task (default: all)")
    sp.add_argument("--rounds", type=int, default=1, help="with --accuracy: alternating rounds per task")
    sp.add_argument("--json", action="store_true")


def _regression_args(sp) -> None:
    sp.add_argument("--rerun-suspects", action="store_true", help="rerun jobs with a regressed metric once; "
                    "confirm only regressions the rerun reproduces")
    sp.add_argument("--confirm-ab", type=int, nargs="?", const=8, default=0, metavar="PAIRS",
                    help="confirm suspects by running the base run's commit (a git worktree) and this tree "
                    "interleaved, A B B A ..., PAIRS pairs (default 8); a one-sided paired test (see "
                    "reports/examples/regression/ab-study.md for its power)")
    sp.add_argument("--threshold", action="append", metavar="METRIC=REL", help="minimum relative change for a "
                    "metric (e.g. decode_tok_s=0.05), or alpha=P; repeatable; overrides the suite's")
    sp.add_argument("--md", metavar="PATH", help="write the Markdown summary here (compare: default stdout)")
    sp.add_argument("--html", metavar="PATH", help="write the HTML report with trend plots here")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .log import setup
    setup()
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished jobs are in the store; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
