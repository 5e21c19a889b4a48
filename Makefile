# peerchat: `make server` and `make client` in two terminals; `make test` before a commit.
# ARGS="..." passes flags through, e.g. make client ARGS="--port 40001".

CARGO ?= cargo
ARGS ?=

.PHONY: build server client test lint demo fmt clean bench

build:
	$(CARGO) build --release --bins

server:
	$(CARGO) run --release --quiet --bin peerchat-server -- $(ARGS)

client:
	$(CARGO) run --release --quiet --bin peerchat-client -- $(ARGS)

test:
	$(CARGO) test --all-targets

demo: build
	bash scripts/demo.sh

# Benchmarks (BENCHMARKS.md): release binaries, the open-file limit raised to the hard
# limit for the 5,000-client figure (the bench also raises it itself), then every group;
# ARGS="transfer" runs one group, ARGS="--quick" every group with small sizes.
bench:
	$(CARGO) build --release --bins
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null; $(CARGO) bench --bench peerchat -- $(ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
