#!/usr/bin/env python3
"""Runs the workspace's test binaries several at a time, as `cargo test` would run them one after
the other: each from its package's directory, with libtest's own threads, every test of a binary
in one process (so the services a binary shares between its tests stay shared).

Most of the suite waits on real services (a broker, Pushgateways, Prometheus) rather than using
the CPU, so binaries overlap well; the longest start first. Each binary's output is kept in
OUT/<binary>.log and printed whole when it fails. Doc tests run as one more job
(`cargo test --doc`).

    run-test-binaries.py OUT [--jobs N] [--timeout SECONDS] [-- CARGO_ARGS...]
    run-test-binaries.py --list [-- CARGO_ARGS...]

The binaries are those of `cargo test --no-run CARGO_ARGS` (default `--locked --workspace`;
scripts/suite-build.sh gives the suite's), which builds what is missing; `--list` only prints them, one `package_dir<TAB>target_name<TAB>executable` line each
(scripts/test-times.sh reads that). OUT/durations.json keeps each binary's last wall time, which
orders the next run; a binary never timed before starts first. Exit status: 0 when every binary
passed, 1 otherwise.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

RESULT = re.compile(r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", help="directory for the logs and durations.json")
    p.add_argument("--list", action="store_true", help="print the test binaries and exit")
    p.add_argument("--jobs", type=int, default=3, help="binaries at once (default 3)")
    p.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        help="seconds after which a binary that has not ended fails (default 1200)",
    )
    # Everything after `--` is for cargo test (argparse would read it as OUT).
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.cargo_args = argv[cut + 1 :]
    return args


def test_binaries(cargo_args):
    """(package_dir, target_name, executable) of every test binary, as `cargo test` runs them."""
    out = subprocess.run(
        ["cargo", "test", "--no-run", "--message-format=json", *cargo_args],
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    ).stdout
    found = []
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
            found.append(
                (
                    os.path.dirname(m["manifest_path"]),
                    m["target"]["name"],
                    m["executable"],
                    m["target"]["kind"][0],
                )
            )
    return found


def jobs_of(binaries, cargo_args):
    """(label, cwd, argv) per test binary, plus the doc tests. A binary target's label says so:
    a package's lib and bin may share a name, and each label names one log."""
    jobs = [
        (f"{os.path.basename(d)}::{name}" + (" (bin)" if kind == "bin" else ""), d, [exe])
        for d, name, exe, kind in binaries
    ]
    jobs.append(("doc tests", ".", ["cargo", "test", "--doc", *cargo_args]))
    return jobs


def load_durations(out):
    try:
        with open(os.path.join(out, "durations.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run(job, out, timeout):
    label, cwd, argv = job
    log = os.path.join(out, re.sub(r"[^A-Za-z0-9_.-]", "_", label) + ".log")
    start = time.monotonic()
    with open(log, "w") as f:
        # Its own process group: on a timeout the services it started go with it.
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            f.write(f"\nrun-test-binaries: no end after {timeout:.0f} s; killed\n")
            rc = -1
    return label, rc, time.monotonic() - start, log


def counts(log):
    """passed, failed, ignored summed over the log's `test result:` lines."""
    total = [0, 0, 0]
    with open(log, errors="replace") as f:
        for line in f:
            m = RESULT.match(line)
            if m:
                for i in range(3):
                    total[i] += int(m.group(i + 2))
    return total


def main():
    args = parse_args()
    cargo_args = args.cargo_args or ["--locked", "--workspace"]
    binaries = test_binaries(cargo_args)
    if args.list:
        for row in binaries:
            print("\t".join(row[:3]))
        return 0
    if not args.out:
        sys.exit("run-test-binaries: give OUT, the directory for the logs (or --list)")
    os.makedirs(args.out, exist_ok=True)
    jobs = jobs_of(binaries, cargo_args)
    durations = load_durations(args.out)
    # Longest first; a binary never timed counts as the longest.
    jobs.sort(key=lambda j: -durations.get(j[0], float("inf")))
    failed, totals = [], [0, 0, 0]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run, j, args.out, args.timeout) for j in jobs]
        for fut in as_completed(futures):
            label, rc, secs, log = fut.result()
            durations[label] = round(secs, 1)
            c = counts(log)
            totals = [a + b for a, b in zip(totals, c)]
            verdict = "ok" if rc == 0 else "FAILED"
            print(f"{secs:7.1f} s  {verdict:6} {label}: {c[0]} passed, {c[1]} failed", flush=True)
            if rc != 0:
                failed.append(label)
                with open(log, errors="replace") as f:
                    sys.stdout.write(f"----- {label} (exit {rc}) -----\n{f.read()}-----\n")
                sys.stdout.flush()
    with open(os.path.join(args.out, "durations.json"), "w") as f:
        json.dump(durations, f, indent=1, sort_keys=True)
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} ignored in {len(jobs)} binaries")
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
