#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: the parts that are awkward in bash.

Subcommands:
  freeport               print a TCP port on 127.0.0.1 that is free right now
  gen-sets N SIZE FILE   write N distinct SET commands (RESP) for `redis-cli --pipe`
  parse-csv FILE         print "rps p50 p99" from one `redis-benchmark --csv` run
  gen-bench-keys SMALL LARGE FILE   the hashes and sets the typed read rows use
  gen-typed DATASET FILE  a typed memory dataset (bighash, bigset, smallhashes)
  report RUNS MEM [TARGETS [TYPED_MEM TYPED_TARGETS]]  print one table of every
                         row with its target, and the verdict

Only the standard library is used, so a stock python3 is enough.
"""

import csv
import os
import socket
import statistics
import sys

# The memory target (row 6) is kept here, overridable from bench.sh via the
# environment; the throughput targets come from bench.sh's ROWS.
# A row without a target in bench.sh's ROWS needs at least this ratio.
MIN_RPS_RATIO = 1.0
MAX_MEM_RATIO = float(os.environ.get("BENCH_MAX_MEM_RATIO", "1.3"))


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


def _bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _command(*parts):
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(p) for p in parts)


def gen_bench_keys(small, large, path):
    # The keys issue 13's read rows use: a small and a large hash, two small
    # and two large sets (the large ones share half their members).
    with open(path, "wb") as f:
        for name, n in ((b"small", small), (b"large", large)):
            f.write(_command(b"DEL", b"bench:hash:" + name, b"bench:set:" + name + b":1",
                             b"bench:set:" + name + b":2"))
            fields = []
            for i in range(n):
                fields += [b"field:%06d" % i, b"value:%06d" % i]
            f.write(_command(b"HSET", b"bench:hash:" + name, *fields))
            f.write(_command(b"SADD", b"bench:set:" + name + b":1",
                             *[b"member:%06d" % i for i in range(n)]))
            f.write(_command(b"SADD", b"bench:set:" + name + b":2",
                             *[b"member:%06d" % i for i in range(n // 2, n + n // 2)]))


def gen_typed(dataset, path):
    # Issue 13's memory datasets, 100 elements per command. Names and values
    # start with letters so neither server can store them as integers.
    with open(path, "wb", buffering=1 << 20) as f:
        if dataset == "bighash":
            for start in range(0, 1_000_000, 100):
                pairs = []
                for i in range(start, start + 100):
                    pairs += [b"field:%08d" % i, b"value:%08d" % i]
                f.write(_command(b"HSET", b"bench:bighash", *pairs))
        elif dataset == "bigset":
            for start in range(0, 1_000_000, 100):
                f.write(_command(b"SADD", b"bench:bigset",
                                 *[b"member:%08d" % i for i in range(start, start + 100)]))
        elif dataset == "smallhashes":
            for k in range(100_000):
                pairs = []
                for i in range(10):
                    pairs += [b"f%d" % i, b"v%07d" % k]
                f.write(_command(b"HSET", b"bench:h:%08d" % k, *pairs))
        else:
            sys.exit(f"unknown dataset {dataset}")


# Elements each typed memory dataset holds (the per-element figure).
TYPED_ELEMENTS = {"bighash": 1_000_000, "bigset": 1_000_000, "smallhashes": 1_000_000}


def typed_memory_rows(mem_path, targets_path):
    # mem file: "dataset server metric value" lines; targets: dataset,
    # ratio, description (tab-separated). Returns table rows and whether
    # all passed.
    values, targets, ok, rows = {}, [], True, []
    if not (mem_path and os.path.exists(mem_path)):
        return rows, ok
    with open(mem_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                values[tuple(parts[:3])] = _num(parts[3])
    with open(targets_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                targets.append((parts[0], _num(parts[1]), parts[2]))
    for dataset, limit, what in targets:
        n = TYPED_ELEMENTS.get(dataset, float("nan"))
        for label, key in (("RSS", "rss"), ("used_memory", "used")):
            per = {}
            for server in ("kriminodb", "redis"):
                grown = (values.get((dataset, server, f"{key}_after"), float("nan"))
                         - values.get((dataset, server, f"{key}_before"), float("nan")))
                per[server] = grown / n
            ratio = _ratio(per["kriminodb"], per["redis"])
            passed = ratio <= limit
            ok &= passed
            rows.append([
                "13", f"memory-{dataset}-{key}", f"{what}, {label}",
                "", "", "", "",
                _fmt(per["kriminodb"], ".1f"), _fmt(per["redis"], ".1f"),
                _fmt(ratio, ".2f"), "", f"bytes/element <= {limit:g}x",
                "PASS" if passed else "FAIL",
            ])
    return rows, ok


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


def _targets(path):
    # targets file: tab-separated  id, issue row, min rps ratio, max p99
    # ratio ("-": none), one line per row of bench.sh's ROWS.
    targets = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 4:
                    rid, num, lo, p99 = parts
                    targets[rid] = (num, _num(lo), _num(p99) if p99 != "-" else None)
    return targets


def report(runs_path, mem_path, targets_path=None, typed_mem_path=None, typed_targets_path=None):
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
    targets = _targets(targets_path)

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
        num, lo, p99_max = targets.get(row, ("", MIN_RPS_RATIO, None))
        # A failed run (NaN) fails its row: NaN compares false.
        passed = ratio >= lo and (p99_max is None or p99_ratio <= p99_max)
        # Any failed run in any round fails the row too (errors, refusals).
        if any(x != x for srv in ("kriminodb", "redis")
               for x in samples.get((row, srv), {"rps": [float("nan")]})["rps"]):
            passed = False
        ok &= passed
        target = f"rps >= {lo:g}x" + (f", p99 <= {p99_max:g}x" if p99_max is not None else "")
        rows.append([
            num, row, workload[row],
            _fmt(k["rps"], ",.0f"), _fmt(r["rps"], ",.0f"),
            f"{_fmt(k['p50'], '.3f')}/{_fmt(k['p99'], '.3f')}",
            f"{_fmt(r['p50'], '.3f')}/{_fmt(r['p99'], '.3f')}",
            "", "",
            _fmt(ratio, ".2f"), _fmt(p99_ratio, ".2f"), target,
            "PASS" if passed else "FAIL",
        ])

    # mem file: key=value lines written by bench.sh.
    mem = {}
    if mem_path and os.path.exists(mem_path):
        with open(mem_path) as f:
            for line in f:
                if "=" in line:
                    key, val = line.strip().split("=", 1)
                    mem[key] = val
    if mem:
        n = _num(mem.get("keys", "nan"))
        for label, key in (("RSS", "rss"), ("used_memory", "used")):
            per = {}
            for server in ("kriminodb", "redis"):
                grown = (_num(mem.get(f"{server}_{key}_after", "nan"))
                         - _num(mem.get(f"{server}_{key}_before", "nan")))
                per[server] = grown / n
            mem_ratio = _ratio(per["kriminodb"], per["redis"])
            passed = mem_ratio <= MAX_MEM_RATIO
            ok &= passed
            rows.append([
                "6", f"memory-{key}",
                f"{int(n):,} keys, {mem.get('value_size', '?')} B values, {label}",
                "", "", "", "",
                _fmt(per["kriminodb"], ".1f"), _fmt(per["redis"], ".1f"),
                _fmt(mem_ratio, ".2f"), "", f"bytes/key <= {MAX_MEM_RATIO:g}x",
                "PASS" if passed else "FAIL",
            ])
    typed_rows, typed_ok = typed_memory_rows(typed_mem_path, typed_targets_path)
    rows += typed_rows
    ok &= typed_ok
    rows.sort(key=lambda r: int(r[0]) if r[0].isdigit() else 99)  # stable
    print(_table(["#", "row", "workload", "kriminodb rps", "redis rps",
                  "kriminodb p50/p99 ms", "redis p50/p99 ms",
                  "kriminodb B/key", "redis B/key",
                  "ratio", "p99 ratio", "target", "result"], rows))
    print("(medians; ratio = kriminodb/redis requests/s (bytes/key for row 6), "
          "p99 ratio = kriminodb/redis p99; # is the row of issue 6; row 8 "
          "(cluster) is make bench-cluster)")
    if mem:
        print("(memory: growth after loading distinct keys with redis-cli --pipe "
              "into a fresh instance; RSS from /proc/PID/status VmRSS, "
              "used_memory from INFO memory, dbsize "
              f"{mem.get('kriminodb_dbsize', '?')} / {mem.get('redis_dbsize', '?')})")
    else:
        print("(memory not measured: BENCH_MEM_KEYS=0)")
        ok = False

    print()
    print(f"verdict: {len([r for r in rows if r[-1] == 'PASS'])}/{len(rows)} rows "
          f"meet their targets, nothing pinned on {os.cpu_count()} cores: "
          f"{'PASS' if ok else 'FAIL'}")
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
    elif cmd == "gen-bench-keys":
        gen_bench_keys(int(args[0]), int(args[1]), args[2])
    elif cmd == "gen-typed":
        gen_typed(args[0], args[1])
    elif cmd == "report":
        return report(*[a if a else None for a in args[:5]])
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
