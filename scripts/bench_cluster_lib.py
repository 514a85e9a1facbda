#!/usr/bin/env python3
"""Helpers for scripts/bench_cluster.sh: the parts that are awkward in bash.

Subcommands:
  gen-sets N SIZE FILE TAG      like bench_lib.py gen-sets (same keys key:000000000000
                                ...), but every value starts with the letter TAG, so
                                a second file with another TAG overwrites the first's
                                keys with different values
  info PORT FIELD...            print INFO fields (or `dbsize`, `digest`), one per line
  wait PORT TIMEOUT START COND...
                                poll 127.0.0.1:PORT every 10 ms until every COND holds,
                                then print the seconds since START (a unix time, e.g.
                                from `date +%s.%N`); exit 1 with the last values on
                                timeout. COND is FIELD=VALUE where FIELD is an INFO
                                field, `dbsize` or `digest`; VALUE `@PORT2` means
                                "equal to the same field on 127.0.0.1:PORT2"
  report FIGURES                print the table and the verdict from key=value lines

A tiny RESP client is built in (no redis-py), so a stock python3 is enough;
freeport and the redis-benchmark CSV parser come from bench_lib.py.
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import _fmt, _num, _ratio, _table, gen_sets  # noqa: E402

# Targets (overridable from bench_cluster.sh via the environment).
MAX_LAG_P99_MS = float(os.environ.get("BENCH_MAX_LAG_P99_MS", "10"))
# Issue 6 row 8 (one node of a 3-node cluster at least as fast as redis
# with two replicas); issue 4 had asked for 0.8.
MIN_RPS_RATIO = float(os.environ.get("BENCH_MIN_RPS_RATIO", "1.0"))
MAX_JOIN_RATIO = float(os.environ.get("BENCH_MAX_JOIN_RATIO", "2"))
MAX_IDLE_BPS = float(os.environ.get("BENCH_MAX_IDLE_BPS", "1024"))


# --- a minimal RESP client ------------------------------------------------------


class RespError(Exception):
    pass


class Conn:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n + 2:]
        return out

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RespError(f"unexpected reply {line[:40]!r}")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()


def read_fields(conn, fields):
    """Values of INFO fields (plus `dbsize`, `digest`) as strings."""
    out = {}
    info_fields = [f for f in fields if f not in ("dbsize", "digest")]
    if info_fields:
        info = {}
        for line in conn.call("INFO").splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                info[k] = v
        for f in info_fields:
            out[f] = info.get(f, "?")
    if "dbsize" in fields:
        out["dbsize"] = str(conn.call("DBSIZE"))
    if "digest" in fields:
        out["digest"] = str(conn.call("DEBUG", "DIGEST"))
    return out


def info(port, fields):
    conn = Conn(port)
    try:
        vals = read_fields(conn, fields)
    finally:
        conn.close()
    for f in fields:
        print(vals[f])


def wait(port, timeout, start, conds):
    parsed = []
    for c in conds:
        field, _, want = c.partition("=")
        parsed.append((field, want))
    fields = sorted({f for f, _ in parsed})
    deadline = time.time() + timeout
    conns, last = {}, "no answer yet"
    while True:
        try:
            if port not in conns:
                conns[port] = Conn(port)
            vals = read_fields(conns[port], fields)
            ok = True
            for field, want in parsed:
                if want.startswith("@"):
                    other = int(want[1:])
                    if other not in conns:
                        conns[other] = Conn(other)
                    want = read_fields(conns[other], [field])[field]
                if vals[field] != want:
                    ok = False
            last = " ".join(f"{f}={vals[f]}" for f in fields)
            if ok:
                print(f"{time.time() - start:.3f}")
                return 0
        except (OSError, ConnectionError, RespError) as e:
            # Not up yet, or busy loading (redis answers -LOADING).
            last = f"{type(e).__name__}: {e}"
            for c in conns.values():
                c.close()
            conns = {}
        if time.time() >= deadline:
            print(f"timed out after {timeout:g} s on 127.0.0.1:{port}; last: {last}",
                  file=sys.stderr)
            return 1
        time.sleep(0.01)


# --- the report --------------------------------------------------------------------


def report(path):
    # figures file: key=value lines written by bench_cluster.sh (and the
    # replication_lag example's one line, split into key=value pairs).
    fig = {}
    with open(path) as f:
        for line in f:
            for word in line.split():
                if "=" in word:
                    k, v = word.split("=", 1)
                    fig[k] = v
    g = lambda k: _num(fig.get(k, "nan"))
    rows, failed = [], []

    def row(name, measured, target, ok):
        if ok is None:
            verdict = "info"
        else:
            verdict = "PASS" if ok else "FAIL"
            if not ok:
                failed.append(name)
        rows.append([name, measured, target, verdict])

    # 1. replication lag (microseconds in the figures file)
    if "lag_ack_p99_us" in fig:
        ms = lambda k: g(k) / 1000 if fig.get(k) != "inf" else float("inf")
        p50, p99, mx = ms("lag_ack_p50_us"), ms("lag_ack_p99_us"), ms("lag_ack_max_us")
        row("1 replication lag, ack on A -> visible on B",
            f"p50 {_fmt(p50, '.3f')} / p99 {_fmt(p99, '.3f')} / max {_fmt(mx, '.3f')} ms",
            f"p99 < {MAX_LAG_P99_MS:g} ms", p99 < MAX_LAG_P99_MS)
        row("  same, from send (includes A's own latency)",
            f"p50 {_fmt(ms('lag_send_p50_us'), '.3f')} / p99 {_fmt(ms('lag_send_p99_us'), '.3f')}"
            f" / max {_fmt(ms('lag_send_max_us'), '.3f')} ms", "", None)
        row("  lag run: keys / offered rate / missing / poll rtt p50,p99",
            f"{fig.get('keys')} / {fig.get('rate')}/s / {fig.get('missing')} / "
            f"{_fmt(ms('poll_rtt_p50_us'), '.3f')},{_fmt(ms('poll_rtt_p99_us'), '.3f')} ms",
            "missing 0", g("missing") == 0)
    else:
        row("1 replication lag", "not measured (example failed)", "", False)

    # 2. write throughput
    c, s, r = g("rps_cluster"), g("rps_single"), g("rps_redis_replicas")
    row("2 SET -P16 rps: cluster node / single node / redis+2 replicas",
        f"{_fmt(c, ',.0f')} / {_fmt(s, ',.0f')} / {_fmt(r, ',.0f')}", "", None)
    rc, rr = _ratio(c, s), _ratio(c, r)
    # Reported, not judged: on one machine the three nodes of the cluster
    # share the cores that the single node has to itself.
    row("  ratio cluster / single kriminodb", _fmt(rc, ".2f"), "", None)
    row("  ratio cluster / redis with 2 replicas (issue 6 row 8)", _fmt(rr, ".2f"), f">= {MIN_RPS_RATIO:g}",
        rr >= MIN_RPS_RATIO)
    for test in ("hset", "incr"):
        ct, rt = g(f"rps_cluster_{test}"), g(f"rps_redis_replicas_{test}")
        if ct == ct or rt == rt:  # measured (not both NaN)
            ratio = _ratio(ct, rt)
            row(f"  {test.upper()} -P16 rps: cluster node / redis+2 replicas (issue 13)",
                f"{_fmt(ct, ',.0f')} / {_fmt(rt, ',.0f')} = {_fmt(ratio, '.2f')}",
                f">= {MIN_RPS_RATIO:g}", ratio >= MIN_RPS_RATIO)
    if "converged_s" in fig:
        conv = fig["converged_s"]
        row("  the 3 cluster nodes identical after the runs",
            "timed out" if conv == "timeout" else f"yes, {conv} s after the last run",
            "identical", conv != "timeout")

    # 3. join time
    jk, jr = g("join_kriminodb_s"), g("join_redis_s")
    jratio = _ratio(jk, jr)
    row(f"3 join, {int(g('join_keys')):,} keys: kriminodb / redis replica",
        f"{_fmt(jk, '.2f')} s / {_fmt(jr, '.2f')} s", "", None)
    row("  ratio kriminodb / redis", _fmt(jratio, ".2f"), f"<= {MAX_JOIN_RATIO:g}",
        jratio <= MAX_JOIN_RATIO)
    if "join_bytes" in fig:
        row("  peer_bytes_sent during the join: all nodes / the joiner",
            f"{g('join_bytes') / 2**20:,.1f} MiB ({_ratio(g('join_bytes'), g('join_keys')):.1f} B/key)"
            f" / {g('join_bytes_joiner') / 2**20:,.1f} MiB", "", None)
    if "preload_s" in fig:
        row("  push-replicating the load to the 2nd node",
            f"{_fmt(g('preload_s'), '.2f')} s after --pipe returned", "", None)

    # 4. idle anti-entropy
    bps = g("idle_bps")
    row(f"4 idle anti-entropy, 2 nodes x {int(g('idle_keys')):,} keys, {fig.get('idle_secs')} s",
        f"{_fmt(bps, '.1f')} B/s per pair ({fig.get('idle_syncs', '?')} syncs)",
        f"< {MAX_IDLE_BPS:g} B/s", bps < MAX_IDLE_BPS)

    # 5. repair
    rb, rk = g("repair_bytes"), g("repair_keys")
    bpk = _ratio(rb, rk)
    # Reported, not judged: the issue sets no target for repair traffic.
    row(f"5 repair {int(rk):,} divergent of {int(g('idle_keys')):,} keys",
        f"{_fmt(rb / 2**20, ',.2f')} MiB = {_fmt(bpk, ',.0f')} B/divergent key", "", None)
    ra = g("repair_bytes_a")
    row("  repair bytes sent by A (written to) / by B (was frozen)",
        f"{_fmt(ra / 2**20, ',.2f')} / {_fmt((rb - ra) / 2**20, ',.2f')} MiB", "", None)
    row("  repair: converged after SIGCONT / entries applied on B / A's syncs",
        f"{fig.get('repair_s', '?')} s / {fig.get('repair_applied', '?')} / "
        f"{fig.get('repair_syncs', '?')}", "", None)

    print(_table(["figure", "measured", "target", "result"], rows))
    print()
    if failed:
        names = "; ".join(n.strip() for n in failed)
        print(f"verdict: FAIL ({len(failed)} failed: {names})")
        return 3
    print("verdict: PASS (every figure met its target)")
    return 0


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "gen-sets":
        gen_sets(int(args[0]), int(args[1]), args[2], args[3])
    elif cmd == "info":
        info(int(args[0]), args[1:])
    elif cmd == "wait":
        return wait(int(args[0]), float(args[1]), float(args[2]), args[3:])
    elif cmd == "report":
        return report(args[0])
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
