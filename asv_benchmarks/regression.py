"""Regression check between two commits: exits non-zero when a benchmark got slower.

A thin wrapper around ``asv continuous`` (virtualenv environment of asv.conf.json:
both commits are built and benchmarked fresh, their rounds interleaved so that a
change in machine load hits both alike). A benchmark is flagged when it is more than
``--factor`` times slower *and* asv's statistics say the two sample sets differ.

    python asv_benchmarks/regression.py                      # main~1 -> main, default subset
    python asv_benchmarks/regression.py --base main --head my-kernel-branch
    python asv_benchmarks/regression.py --bench 'Simulate\\.time_simulate' --factor 1.1
    python asv_benchmarks/regression.py --repo /tmp/other-clone --results-dir /tmp/r ...

Exit status: 0 no regression, 1 regression (> factor slower), 2 asv failed
(build error, benchmark error, bad commit name).

Commits are names in the config's repository (``repo`` of asv.conf.json, this one):
commit a kernel change on a branch first; uncommitted edits are not benchmarked
(``asv run --python=same`` or ab.py measure a working tree). ``--repo`` points the
check at another git repository, e.g. a clone holding a throwaway commit; the
benchmark files always come from this folder's benchmarks/.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "asv.conf.json")

# one cheap, representative point: JIT compiled in setup (cached per source version),
# ~0.3 s a call on 2 cores
DEFAULT_BENCH = r"Simulate\.time_simulate\(1024, 16, 'float32'\)"


def load_conf(path):
    """asv.conf.json allows // comments; strip whole-line ones before json.loads."""
    with open(path) as fh:
        text = "".join(line for line in fh if not line.lstrip().startswith("//"))
    return json.loads(text)


def fail(message):
    """Exit 2 (not 1, which means a regression)."""
    print(f"regression.py: {message}", file=sys.stderr)
    sys.exit(2)


def git_hash(repo, name):
    out = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet",
                          name + "^{commit}"], capture_output=True, text=True)
    if out.returncode:
        fail(f"unknown commit {name!r} in {repo}")
    return out.stdout.strip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main~1", help="reference commit (default main~1)")
    p.add_argument("--head", default="main", help="commit under test (default main)")
    p.add_argument("--bench", "-b", action="append",
                   help=f"asv benchmark regex, repeatable (default {DEFAULT_BENCH!r}); "
                        "parameterized benchmarks match 'name(p1, p2, ...)'")
    p.add_argument("--factor", type=float, default=1.2,
                   help="flag results more than this many times slower (default 1.2)")
    p.add_argument("--repeat", type=int, default=5,
                   help="samples per process and commit (default 5)")
    p.add_argument("--processes", type=int, default=2,
                   help="interleaved rounds, one process each (default 2)")
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--repo", help="git repository to build from instead of the config's")
    p.add_argument("--results-dir", help="where asv writes results (default the config's)")
    p.add_argument("--threads", type=int,
                   help="NUMBA_NUM_THREADS/OPENBLAS_NUM_THREADS/OMP_NUM_THREADS for the "
                        "benchmarks (default: unset, all cores); 1 keeps a busy core shared "
                        "with another job from gating every parallel section")
    p.add_argument("--no-nice", action="store_true",
                   help="run at normal priority (default: nice -n 19)")
    args = p.parse_args(argv)

    conf_path = os.path.abspath(args.config)
    conf_dir = os.path.dirname(conf_path)
    conf = load_conf(conf_path)
    repo = os.path.abspath(os.path.join(conf_dir, args.repo or conf["repo"]))
    base, head = git_hash(repo, args.base), git_hash(repo, args.head)
    if base == head:
        fail(f"{args.base} and {args.head} are the same commit")

    tmp = None
    if args.repo or args.results_dir:
        # a copy of the config with absolute paths; the built environments are shared
        conf = dict(conf)
        for key in ("benchmark_dir", "env_dir", "results_dir", "html_dir"):
            conf[key] = os.path.abspath(os.path.join(conf_dir, conf[key]))
        conf["repo"] = repo
        if args.results_dir:
            conf["results_dir"] = os.path.abspath(args.results_dir)
        tmp = tempfile.mkdtemp(prefix="asv-regression-")
        conf_path = os.path.join(tmp, "asv.conf.json")
        with open(conf_path, "w") as fh:
            json.dump(conf, fh, indent=4)

    cmd = ([] if args.no_nice else ["nice", "-n", "19"]) + [
        sys.executable, "-m", "asv", "continuous", "--config", conf_path,
        "--factor", str(args.factor), "--interleave-rounds", "--show-stderr",
        "-a", f"repeat={args.repeat}", "-a", f"processes={args.processes}"]
    for regex in args.bench or [DEFAULT_BENCH]:
        cmd += ["-b", regex]
    cmd += [base, head]
    print(f"regression.py: {args.base} ({base[:8]}) -> {args.head} ({head[:8]}), "
          f"factor {args.factor}", flush=True)
    print("+ " + " ".join(cmd), flush=True)
    env = dict(os.environ)
    if args.threads:
        for var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
        print(f"+ threads: {args.threads}", flush=True)
    lines = []   # echoed as they come (a run takes minutes), kept for the verdict
    try:
        with subprocess.Popen(cmd, cwd=conf_dir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                lines.append(line)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    # asv continuous exits 1 both for "performance decreased" (a result more than factor
    # slower, marked '+', or a benchmark that newly fails, marked '!') and for a run that
    # failed before comparing (no verdict line then)
    out = "".join(lines)
    if proc.returncode == 0:
        print(f"regression.py: OK, nothing more than {args.factor}x slower")
        return 0
    if "PERFORMANCE DECREASED" in out:
        print(f"regression.py: REGRESSION, {args.head} is more than {args.factor}x slower "
              f"than {args.base} (or newly fails): the lines marked '+' or '!' above")
        return 1
    print(f"regression.py: asv failed (exit {proc.returncode}) before comparing")
    return 2


if __name__ == "__main__":
    sys.exit(main())
