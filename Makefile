# peerchat: `make server` and `make client` in two terminals; `make test` before a commit.
# ARGS="..." passes flags through, e.g. make client ARGS="--port 40001".

CARGO ?= cargo
ARGS ?=

.PHONY: build server client test lint demo fmt clean

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

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
