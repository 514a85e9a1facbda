# kriminoDB developer tasks. `make help` lists them.

CARGO ?= cargo
BIN   := target/release/kriminodb
# Peer address of node1, the seed the other nodes join.
SEED  := 127.0.0.1:4000
# make fuzz: seconds per target, and one target (default: all four).
FUZZ_SECONDS ?= 300
FUZZ_TARGET  ?=

.DEFAULT_GOAL := help

.PHONY: help build run test test-reference fmt lint bench bench-callgrind bench-cluster clean cluster node1 node2 node3 node4 fault fuzz fuzz-smoke fuzz-seeds

help: ## list the targets
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## / { printf "  make %-8s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## release build of the kriminodb binary
	$(CARGO) build --release

run: ## one node: clients on 3000, peers on 4000
	$(CARGO) run --release -- --port 3000 --peer-port 4000

# The whole suite, in the order that fails fastest. cargo test comes last and
# its closing lines are the last thing printed (CI reads them). First it
# installs what the suite needs and the machine lacks (nftables, iproute2,
# redis-tools, redis-server, rustfmt, clippy), when run as root.
test: ## install missing test deps (as root), cargo fmt --check, clippy -D warnings, cargo test
	bash scripts/test_deps.sh
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test

test-reference: ## the command tests against a real redis-server (needs redis-server)
	bash scripts/test_reference.sh

fmt: ## format the code in place
	$(CARGO) fmt

lint: ## formatting check and clippy, without the tests
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fuzz: ## fuzz every target FUZZ_SECONDS (300) s, or just FUZZ_TARGET (needs cargo-fuzz)
	bash scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGET)

fuzz-smoke: ## 30 s per fuzz target (CI runs it after make test)
	bash scripts/fuzz.sh 30

fuzz-seeds: ## rewrite the seed corpus in fuzz/seeds after a wire-format change
	$(CARGO) test --lib fuzzing::seeds::tests::write_seed_corpus -- --ignored

bench: ## kriminodb vs redis-server (scripts/bench.sh; BENCH_* env vars)
	bash scripts/bench.sh

bench-callgrind: build ## instructions per request vs redis-server under callgrind (CG_* env vars)
	bash scripts/bench_callgrind.sh

bench-cluster: ## cluster figures: lag, throughput, join, anti-entropy (scripts/bench_cluster.sh)
	bash scripts/bench_cluster.sh

clean: ## remove build output
	$(CARGO) clean

# nodeN: clients on port 2999+N, peers on 3999+N; node2..4 join node1.
node1: ## cluster node 1 (3000/4000), the seed
	$(CARGO) run --release -- --port 3000 --peer-port 4000 --name node1

node2: ## cluster node 2 (3001/4001), joins node1
	$(CARGO) run --release -- --port 3001 --peer-port 4001 --name node2 --join $(SEED)

node3: ## cluster node 3 (3002/4002), joins node1
	$(CARGO) run --release -- --port 3002 --peer-port 4002 --name node3 --join $(SEED)

node4: ## cluster node 4 (3003/4003), joins node1
	$(CARGO) run --release -- --port 3003 --peer-port 4003 --name node4 --join $(SEED)

cluster: build ## node1..node4 in this terminal, output prefixed; Ctrl-C stops all
	bash scripts/cluster.sh $(BIN)

fault: ## fault injection by hand, release build (root; FAULT_SCENARIO/NODES/DURATION/SEED/RUNS)
	bash scripts/fault.sh
