#!/usr/bin/env bash
# Removes what fault-test runs left behind when they died without cleaning up
# (Ctrl-C, SIGKILL): network namespaces and bridges named kf<pid hex>x… whose
# creating process is gone, and the node processes still inside them. Runs
# that are alive are left alone. The tests do the same when they start.
set -uo pipefail

owner_alive() { # name → 0 if its creating process still runs (or not ours)
  local hex=${1#kf}
  hex=${hex%%x*}
  [[ $hex =~ ^[0-9a-f]+$ ]] || return 0
  [[ -d /proc/$((16#$hex)) ]]
}

for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^kf[0-9a-f]+x' || true); do
  owner_alive "$ns" && continue
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null && echo "fault cleanup: removed namespace $ns"
done
for br in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^kf[0-9a-f]+x' || true); do
  owner_alive "$br" && continue
  ip link del "$br" 2>/dev/null && echo "fault cleanup: removed bridge $br"
done
exit 0
