#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: the parts that are awkward in bash.

Subcommands:
  freeport               print a TCP port on 127.0.0.1 that is free right now
  gen-sets N SIZE FILE   write N distinct SET commands (RESP) for `redis-cli --pipe`
  parse-csv FILE         print "rps p50 p99" from one `redis-benchmark --csv` run
  report RUNS MEM        print the comparison table, the memory table and the verdict

Only the standard library is used, so a stock python3 is enough.
"""

import csv
import os
import socket
import statistics
import sys

# Pass/fail thresholds of the verdict line (kept here, next to the code that
# applies them, and overridable from bench.sh via the environment).

MIN_RPS_RATIO = float(os.environ.get("BENCH_MIN_RPS_RATIO", "0.9"))
MAX_MEM_RATIO = float(os.environ.get("BENCH_MAX_MEM_RATIO", "1.5"))


def freeport():
    # Binding port 0 lets the kernel pick; there is a small race until the
    # server binds it, which bench.sh detects (server fails to start).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def gen_sets(n, size, path, tag="v"):
    # Keys look like redis-benchmark's ("key:" + 12 digits = 16 bytes) but are
    # all distinct, which `redis-benchmark -r` cannot guarantee. Values start
    # with a letter so that Redis cannot store them as integers: both servers
    # must hold the same 16 opaque bytes per key.
    if size < 2 or len(tag) != 1:
        sys.exit("value size must be >= 2 and TAG one letter")
    pad = size - 1
    head = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:"
    mid = b"\r\n$%d\r\n%s" % (size, tag.encode())
    with open(path, "wb", buffering=1 << 20) as f:
        chunk = []
        for i in range(n):
            chunk.append(b"%s%012d%s%0*d\r\n" % (head, i, mid, pad, i % (10**pad)))
            if len(chunk) == 10000:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))


def parse_csv(path):
    # redis-benchmark 7.0 --csv prints a header line
    #   "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
    #   "p95_latency_ms","p99_latency_ms","max_latency_ms"
    # then one line per test. Columns are looked up by name, not position,
    # in case another version reorders them.
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = next((r for r in rows if r and r[0] == "test"), None)
    data = [r for r in rows if r and r[0] != "test"]
    if header is None or not data:
        sys.exit(f"no redis-benchmark CSV data in {path}")
    rec = dict(zip(header, data[-1]))
    print(rec["rps"], rec["p50_latency_ms"], rec["p99_latency_ms"])


def _num(s):
    try:
        return float(s)
    except ValueError:
        return float("nan")


def _median(xs):
    xs = [x for x in xs if x == x]  # drop NaN (failed runs)
    return statistics.median(xs) if xs else float("nan")


def _fmt(x, spec):
    return "n/a" if x != x else format(x, spec)


def _ratio(a, b):
    if a != a or b != b or b == 0:
        return float("nan")
    return a / b


def _table(headers, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def report(runs_path, mem_path):
    # runs file: tab-separated  round, row, workload, server, rps, p50, p99
    # (server is "kriminodb" or "redis"; rps is "nan" when the run failed).
    order, workload, samples = [], {}, {}
    with open(runs_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 7:
                continue
            _, row, wl, server, rps, p50, p99 = parts
            if row not in workload:
                order.append(row)
                workload[row] = wl
            s = samples.setdefault((row, server), {"rps": [], "p50": [], "p99": []})
            s["rps"].append(_num(rps))
            s["p50"].append(_num(p50))
            s["p99"].append(_num(p99))

    ok = True
    rows = []
    for row in order:
        med = {}
        for server in ("kriminodb", "redis"):
            s = samples.get((row, server), {"rps": [], "p50": [], "p99": []})
            med[server] = {k: _median(v) for k, v in s.items()}
        k, r = med["kriminodb"], med["redis"]
        ratio = _ratio(k["rps"], r["rps"])
        p99_ratio = _ratio(k["p99"], r["p99"])
        if not ratio >= MIN_RPS_RATIO:  # also false for NaN
            ok = False
        rows.append([
            row, workload[row],
            _fmt(k["rps"], ",.0f"), _fmt(r["rps"], ",.0f"), _fmt(ratio, ".2f"),
            f"{_fmt(k['p50'], '.3f')}/{_fmt(k['p99'], '.3f')}",
            f"{_fmt(r['p50'], '.3f')}/{_fmt(r['p99'], '.3f')}",
            _fmt(p99_ratio, ".2f"),
        ])
    print(_table(["row", "workload", "kriminodb rps", "redis rps", "ratio",
                  "kriminodb p50/p99 ms", "redis p50/p99 ms", "p99 ratio"], rows))
    print("(medians; ratio = kriminodb/redis rps, higher is better; "
          "p99 ratio = kriminodb/redis p99, lower is better)")

    # mem file: key=value lines written by bench.sh.
    mem = {}
    if mem_path and os.path.exists(mem_path):
        with open(mem_path) as f:
            for line in f:
                if "=" in line:
                    key, val = line.strip().split("=", 1)
                    mem[key] = val
    mem_ratio = float("nan")
    if mem:
        n = _num(mem.get("keys", "nan"))
        print()
        print(f"memory: {int(n):,} distinct keys, {mem.get('value_size', '?')}-byte values, "
              "loaded with redis-cli --pipe into a fresh instance of each server")
        mrows = []
        per = {}
        for server in ("kriminodb", "redis"):
            rss = _num(mem.get(f"{server}_rss_after", "nan")) - _num(mem.get(f"{server}_rss_before", "nan"))
            used = _num(mem.get(f"{server}_used_after", "nan")) - _num(mem.get(f"{server}_used_before", "nan"))
            per[server] = (rss / n, used / n)
            mrows.append([server, mem.get(f"{server}_dbsize", "?"),
                          _fmt(rss / 2**20, ",.1f"), _fmt(rss / n, ".1f"),
                          _fmt(used / 2**20, ",.1f"), _fmt(used / n, ".1f")])
        mem_ratio = _ratio(per["kriminodb"][0], per["redis"][0])
        used_ratio = _ratio(per["kriminodb"][1], per["redis"][1])
        mrows.append(["ratio", "", "", _fmt(mem_ratio, ".2f"), "", _fmt(used_ratio, ".2f")])
        print(_table(["server", "dbsize", "RSS growth MiB", "RSS B/key",
                      "used_memory growth MiB", "used_memory B/key"], mrows))
        print("(RSS from /proc/PID/status VmRSS; used_memory from INFO memory, "
              "self-reported by each server)")
    if mem and not mem_ratio <= MAX_MEM_RATIO:
        ok = False

    print()
    mem_rule = (f"RSS bytes/key <= {MAX_MEM_RATIO:g}x redis" if mem
                else "memory not measured")
    print(f"verdict: throughput ratios >= {MIN_RPS_RATIO:g} on all rows and "
          f"{mem_rule}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 3


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "freeport":
        freeport()
    elif cmd == "gen-sets":
        gen_sets(int(args[0]), int(args[1]), args[2])
    elif cmd == "parse-csv":
        parse_csv(args[0])
    elif cmd == "report":
        return report(args[0], args[1] if len(args) > 1 else None)
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
