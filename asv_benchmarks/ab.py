"""Paired A/B timings of the asv suite for two source trees of winit_sim.

Usage: python asv_benchmarks/ab.py --a /tmp/base --b /work/main [--rounds 5]
                                   [--filter REGEX] [--repeat N] [--timeout S] [--list]

Benchmarks: every ``time_*`` method of the classes in benchmarks/bench_simulate.py
and benchmarks/bench_conditional.py, every combination of its ``params``; with
``--filter``, those whose name matches (re.search) where the name is written
like ``bench_simulate.Simulate.time_simulate(256, 16, 'float32')``. ``--list``
prints the names and stops.

Each benchmark runs in ``--rounds`` rounds A, B, A, B, ...; every run is a fresh
process (``python -c``) with PYTHONPATH=<tree> and its working directory this
script's asv_benchmarks/, so both trees run the same benchmark files and only
winit_sim differs (the process checks both). The process calls ``setup``, runs
the benchmark once untimed (JIT compilation or cache load), times ``--repeat``
calls (default: the class's ``repeat`` where it sets one, else 5) and reports
their median. A benchmark whose setup raises NotImplementedError (asv's skip:
the torch baseline without torch) is skipped with a note.

Printed per benchmark: the medians over rounds of A's and of B's round medians,
B/A of the two, the range of the per-round ratios B/A, and the spread of A's and
of B's round medians ((max - min) / median). The first run in a tree compiles
its kernels (minutes); they are cached by source under ~/.cache/winit_sim/.
"""
import argparse
import importlib
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys

SUITE_DIR = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.join(SUITE_DIR, "benchmarks")
MODULES = ["bench_simulate", "bench_conditional"]
DEFAULT_REPEAT = 5
MARK = "AB-RESULT "

# The child process. It runs in SUITE_DIR, which ``python -c`` puts first on the
# import path (before PYTHONPATH): it imports this file (``ab``) and the suite
# (``benchmarks``) from here, and SUITE_DIR has no winit_sim in it. PYTHONPATH=<tree>
# then comes before site-packages, and the venv's editable install of /work/main
# (a setuptools finder appended to the end of the meta path, behind the ordinary
# path finder) is consulted only when no directory on the path has winit_sim: so
# winit_sim comes from <tree>, without any edit of the import path. The child
# checks winit_sim.__file__ against <tree> all the same and stops if it differs.
CHILD = "import sys, ab; ab.child(sys.argv[1])"


class WrongTree(Exception):
    pass


# ------------------------------------------------------------------ child side

def _emit(obj):
    print(MARK + json.dumps(obj), flush=True)


def _params(fn, cls):
    """asv's params: a list of lists (one per parameter) or a single list."""
    params = getattr(fn, "params", getattr(cls, "params", []))
    names = getattr(fn, "param_names", getattr(cls, "param_names", []))
    params = list(params)
    if params and not all(isinstance(p, (list, tuple)) for p in params):
        params = [params]
    return [list(p) for p in params], list(names)


def _benchmarks():
    """(module name, class, method name, combinations, param names) of the suite."""
    out = []
    for mod_name in MODULES:
        mod = importlib.import_module("benchmarks." + mod_name)
        for cls in vars(mod).values():
            if not isinstance(cls, type) or cls.__module__ != mod.__name__:
                continue
            for name in sorted(n for n in dir(cls) if n.startswith("time_")):
                params, names = _params(getattr(cls, name), cls)
                out.append((mod_name, cls, name, list(itertools.product(*params)), names))
    return out


def _name(mod_name, cls_name, method, combo):
    return f"{mod_name}.{cls_name}.{method}({', '.join(map(repr, combo))})"


def _repeat_of(fn, cls):
    repeat = getattr(fn, "repeat", getattr(cls, "repeat", 0))
    return repeat if isinstance(repeat, int) and repeat > 0 else DEFAULT_REPEAT


def child(arg):
    spec = json.loads(arg)
    import winit_sim
    got = os.path.dirname(os.path.realpath(winit_sim.__file__))
    want = os.path.realpath(os.path.join(spec["tree"], "winit_sim"))
    import benchmarks
    suite = os.path.dirname(os.path.realpath(benchmarks.__file__))
    if got != want or suite != os.path.realpath(BENCH_DIR):
        print(f"ab.py child: winit_sim from {got} (want {want}), benchmarks from {suite} "
              f"(want {BENCH_DIR})", file=sys.stderr)
        sys.exit(3)
    info = dict(winit_sim=got, suite=suite, digest=getattr(winit_sim, "SOURCE_DIGEST", None))
    if spec["do"] == "info":
        return _emit(info)
    if spec["do"] == "list":
        cases = []
        for mod_name, cls, method, combos, names in _benchmarks():
            for i, combo in enumerate(combos):
                cases.append(dict(module=mod_name, cls=cls.__name__, method=method, index=i,
                                  name=_name(mod_name, cls.__name__, method, combo),
                                  params=", ".join(map(repr, combo)), param_names=names,
                                  repeat=_repeat_of(getattr(cls, method), cls)))
        return _emit(dict(info, cases=cases))
    # do == "run"
    from benchmarks.common import sample_times
    mod = importlib.import_module("benchmarks." + spec["module"])
    cls = getattr(mod, spec["cls"])
    params, _ = _params(getattr(cls, spec["method"]), cls)
    combo = list(itertools.product(*params))[spec["index"]]
    bench = cls()
    fn = getattr(bench, spec["method"])
    try:
        if hasattr(bench, "setup"):
            bench.setup(*combo)
    except NotImplementedError as e:   # asv's way to skip
        return _emit(dict(info, skipped=str(e) or "NotImplementedError"))
    try:
        times = sample_times(lambda: fn(*combo), spec["repeat"], warmup=1)
    except NotImplementedError as e:
        return _emit(dict(info, skipped=str(e) or "NotImplementedError"))
    finally:
        if hasattr(bench, "teardown"):
            bench.teardown(*combo)
    _emit(dict(info, times=times, median=statistics.median(times)))


# ----------------------------------------------------------------- parent side

def _run_child(tree, spec, timeout):
    env = dict(os.environ, PYTHONPATH=tree)
    env.pop("PYTHONSAFEPATH", None)   # it would drop the working directory from the path
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(dict(spec, tree=tree))],
                             cwd=SUITE_DIR, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout} s") from None
    if out.returncode == 3:
        raise WrongTree(out.stderr.strip())
    lines = [l for l in out.stdout.splitlines() if l.startswith(MARK)]
    if out.returncode or not lines:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"exit status {out.returncode}:\n{tail}")
    return json.loads(lines[-1][len(MARK):])


def _fmt(s):
    return f"{1000 * s:.2f} ms" if s < 1 else f"{s:.3f} s"


def main():
    ap = argparse.ArgumentParser(description="Paired A/B timings of the asv suite for two "
                                             "source trees of winit_sim.")
    ap.add_argument("--a", required=True, help="source tree A (holds winit_sim/)")
    ap.add_argument("--b", required=True, help="source tree B (holds winit_sim/)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--filter", default=None, help="regex on the benchmark names (re.search)")
    ap.add_argument("--repeat", type=int, default=None,
                    help=f"timed calls per run (default: the class's repeat, else "
                         f"{DEFAULT_REPEAT})")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per child process")
    ap.add_argument("--list", action="store_true", help="print the benchmark names and stop")
    args = ap.parse_args()
    trees = {}
    for label, tree in (("A", args.a), ("B", args.b)):
        tree = os.path.realpath(tree)
        if not os.path.isfile(os.path.join(tree, "winit_sim", "__init__.py")):
            ap.error(f"--{label.lower()} {tree}: no winit_sim/__init__.py there")
        trees[label] = tree
    try:
        for label, tree in trees.items():
            info = _run_child(tree, dict(do="info"), args.timeout)
            print(f"{label}: {info['winit_sim']} (source digest {info['digest']})")
        print(f"benchmarks: {info['suite']} (the same files for A and B)")
        listing = _run_child(trees["A"], dict(do="list"), args.timeout)
    except WrongTree as e:
        sys.exit(f"ab.py: {e}")
    cases = [c for c in listing["cases"]
             if args.filter is None or re.search(args.filter, c["name"])]
    if args.list:
        for c in cases:
            print(c["name"])
        return
    if not cases:
        sys.exit("ab.py: no benchmark matches --filter")
    print(f"{len(cases)} benchmarks, {args.rounds} rounds A, B, A, B, ... of a fresh process "
          f"each; per run the median of --repeat timed calls after one untimed call")
    rows, notes, failed = [], [], False
    for k, case in enumerate(cases, 1):
        spec = dict(do="run", module=case["module"], cls=case["cls"], method=case["method"],
                    index=case["index"], repeat=args.repeat or case["repeat"])
        got = {"A": [], "B": []}
        try:
            for r in range(args.rounds):
                for label in ("A", "B"):
                    res = _run_child(trees[label], spec, args.timeout)
                    if "skipped" in res:
                        raise NotImplementedError(res["skipped"])
                    got[label].append(res["median"])
                print(f"[{k}/{len(cases)}] {case['name']} round {r + 1}/{args.rounds}: "
                      f"A {_fmt(got['A'][-1])}, B {_fmt(got['B'][-1])}", file=sys.stderr,
                      flush=True)
        except NotImplementedError as e:
            notes.append(f"skipped {case['name']}: {e}")
            print(f"[{k}/{len(cases)}] {notes[-1]}", file=sys.stderr, flush=True)
            continue
        except WrongTree as e:
            sys.exit(f"ab.py: {e}")
        except RuntimeError as e:
            notes.append(f"FAILED {case['name']} (tree {label}): {e}")
            print(f"[{k}/{len(cases)}] {notes[-1]}", file=sys.stderr, flush=True)
            failed = True
            continue
        a, b = statistics.median(got["A"]), statistics.median(got["B"])
        ratios = [y / x for x, y in zip(got["A"], got["B"])]
        spread = {k_: (max(v) - min(v)) / statistics.median(v) for k_, v in got.items()}
        rows.append((f"{case['cls']}.{case['method']}", case["params"], a, b, b / a,
                     min(ratios), max(ratios), spread["A"], spread["B"]))
    print()
    print(f"{'benchmark':<32} {'params':<22} {'A':>11} {'B':>11} {'B/A':>6} "
          f"{'B/A rounds':>13} {'A spread':>9} {'B spread':>9}")
    for name, params, a, b, ratio, lo, hi, sa, sb in rows:
        print(f"{name:<32} {params:<22} {_fmt(a):>11} {_fmt(b):>11} {ratio:>6.3f} "
              f"{lo:>6.3f}..{hi:<5.3f} {100 * sa:>8.1f}% {100 * sb:>8.1f}%")
    if rows:
        gmean = math.exp(statistics.mean(math.log(r[4]) for r in rows))
        print(f"geometric mean of B/A over {len(rows)} benchmarks: {gmean:.3f} "
              f"({args.rounds} rounds; A {trees['A']}, B {trees['B']})")
    for note in notes:
        print(note)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
