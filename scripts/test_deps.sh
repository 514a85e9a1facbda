#!/usr/bin/env bash
# Installs what `make test` needs and this machine lacks, so the README's
# test command passes on a fresh Debian machine:
#   nftables          the fault tests cut links with nft inside namespaces
#   iproute2          ... and create those namespaces with `ip netns`
#   redis-tools       redis-cli / redis-benchmark, which tests shell out to
#   redis-server      the reference server `make test-reference` compares with
#   rustfmt, clippy   `make test` starts with cargo fmt --check and clippy
# Idempotent: a machine that has everything installs nothing and prints
# nothing. It installs only as root (as CI runs); otherwise it names what is
# missing and goes on, and the tests that need it say so when they fail.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# command -> Debian package that provides it
declare -A PACKAGE=(
  [nft]=nftables
  [ip]=iproute2
  [redis-cli]=redis-tools
  [redis-server]=redis-server
)
missing=()
for cmd in nft ip redis-cli redis-server; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGE[$cmd]}")
done

if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test deps: installing ${missing[*]}" >&2
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null
  else
    echo "test deps: missing ${missing[*]}; run 'make test' as root (or apt-get install them) to install them" >&2
  fi
fi

# rust-toolchain.toml asks for rustfmt and clippy; add them if this
# toolchain lacks them (from the repository, so rustup picks the pinned
# toolchain).
if command -v rustup >/dev/null 2>&1; then
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  installed=$(rustup component list --installed 2>/dev/null || true)
  for comp in rustfmt clippy; do
    grep -q "^$comp" <<<"$installed" || rustup component add "$comp" >&2 ||
      echo "test deps: could not add $comp" >&2
  done
fi
