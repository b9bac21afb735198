"""The long fuzz run: each harness for ``--seconds``, from the generated seed
corpus, then its corpus replayed for line coverage; one log and one JSON.

    python tests/fuzz/campaign.py --seconds 300 --log docs/results/fuzz-cpu-run1.log
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

HARNESSES = {"igt": ("fuzz_igt.py", corpus.igt_seeds), "serve": ("fuzz_serve.py", corpus.serve_seeds)}
FLAGS = ["-max_len=65536", "-rss_limit_mb=2048", "-timeout=20", "-print_final_stats=1"]


def run(name: str, seconds: int, workdir: Path, log) -> dict:
    script, seeds = HARNESSES[name]
    folder = workdir / name
    corpus_dir = corpus.write(folder / "corpus", seeds())
    seeds_count = len(list(corpus_dir.iterdir()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    started = time.time()
    proc = subprocess.run([sys.executable, str(HERE / script), *FLAGS, f"-max_total_time={seconds}",
                           f"-artifact_prefix={folder}/", str(corpus_dir)],
                          capture_output=True, text=True, env=env, timeout=seconds + 600)
    wall = time.time() - started
    out = proc.stdout + proc.stderr
    lines = out.splitlines()
    progress = [line for line in lines if re.match(r"#\d+", line)]
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", out))
    last = progress[-1] if progress else ""
    cov = re.search(r"cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", last)
    crashes = sorted(p.name for p in folder.iterdir() if p.name.startswith(("crash-", "oom-", "timeout-", "leak-")))
    replay = subprocess.run([sys.executable, str(HERE / script), "--replay", str(corpus_dir)],
                            capture_output=True, text=True, env=env, timeout=1800)
    coverage = json.loads(replay.stdout.strip().splitlines()[-1]) if replay.returncode == 0 else None
    result = {
        "harness": name, "seconds": seconds, "wall_s": round(wall, 1), "exit_code": proc.returncode,
        "seed_inputs": seeds_count, "executions": int(stats.get("number_of_executed_units", 0)),
        "exec_per_s": int(stats.get("average_exec_per_sec", 0)), "new_units": int(stats.get("new_units_added", 0)),
        "peak_rss_mb": int(stats.get("peak_rss_mb", 0)),
        "edges_covered": int(cov.group(1)) if cov else None, "features": int(cov.group(2)) if cov else None,
        "corpus_final": int(cov.group(3)) if cov else None, "crashes": crashes,
        "line_coverage": coverage,
    }
    log.write(f"==== {name}: {script}, {seconds} s, seeds {seeds_count}, exit {proc.returncode}\n")
    log.write("\n".join(lines[:12] + ["..."] + progress[-15:] + [x for x in lines if x.startswith("stat::")]))
    log.write(f"\n---- line coverage after replaying the corpus: {json.dumps(coverage)}\n")
    if replay.returncode != 0:
        log.write(replay.stderr[-3000:] + "\n")
    log.write(f"---- summary: {json.dumps(result)}\n\n")
    log.flush()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=300, help="per harness")
    parser.add_argument("--harness", nargs="+", default=list(HARNESSES), choices=list(HARNESSES))
    parser.add_argument("--workdir", default="fuzz-work")
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with open(args.log, "w") as log:
        log.write(f"# fuzz campaign, {time.strftime('%Y-%m-%d %H:%M')}, {platform.platform()}, "
                  f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n\n")
        results = [run(name, args.seconds, workdir, log) for name in args.harness]
    Path(args.log).with_suffix(".json").write_text(json.dumps(results, indent=1))
    for r in results:
        print(f"{r['harness']}: {r['executions']} executions ({r['exec_per_s']}/s), {r['edges_covered']} edges, "
              f"corpus {r['corpus_final']}, crashes {r['crashes'] or 'none'}, line coverage "
              + ", ".join(f"{k} {v['percent']}%" for k, v in (r['line_coverage'] or {}).get('targets', {}).items()))


if __name__ == "__main__":
    main()
