# peerchat: `make server` and `make client` (or `make gui`) in two terminals; `make test`
# before a commit.
# ARGS="..." passes flags through, e.g. make client ARGS="--port 40001".

CARGO ?= cargo
ARGS ?=

.PHONY: build server client gui test test-browser test-postgres test-postgres-quick gui-screenshots lint demo fmt clean bench wormhole-venv

build:
	$(CARGO) build --release --bins

server:
	$(CARGO) run --release --quiet --bin peerchat-server -- $(ARGS)

client:
	$(CARGO) run --release --quiet --bin peerchat-client -- $(ARGS)

test:
	$(CARGO) test --all-targets
	$(MAKE) test-postgres-quick
	$(MAKE) test-browser

# The server suite again with every test server on a real PostgreSQL instead of SQLite
# (PEERCHAT_TEST_DB=postgres: tests/common starts one from Debian's packages in a
# temporary folder, one database per server, and fails if PostgreSQL is missing).
# tests/postgres_store.rs (two servers on one PostgreSQL) runs in every `cargo test`.
PG_SUITE = accounts encryption faults flags hostile hostile_text ladder load login_limits \
	presence protocol_doc scale server_limits session_log sessions files file_hardening \
	peer_hardening gui_api tui client_cli server_messages queued_offers
# The part `make test` runs (about a minute): accounts, logins, blocks, the session log,
# presence, faults and restarts. (sessions.rs is left to test-postgres: two of its
# restart tests have timed out on PostgreSQL when the machine was overloaded.)
PG_QUICK = accounts session_log presence faults

test-postgres:
	PEERCHAT_TEST_DB=postgres $(CARGO) test --no-fail-fast $(addprefix --test ,$(PG_SUITE))

test-postgres-quick:
	PEERCHAT_TEST_DB=postgres $(CARGO) test $(addprefix --test ,$(PG_QUICK))

demo: build
	bash scripts/demo.sh

# Benchmarks (BENCHMARKS.md): release binaries, the open-file limit raised to the hard
# limit for the 10,000-client figure (the bench also raises it itself, and as root its
# hard limit too, to 65,536: README "Running 10,000 clients"), then every group;
# ARGS="transfer" runs one group, ARGS="--quick" every group with small sizes.
bench:
	$(CARGO) build --release --bins
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null; $(CARGO) bench --bench peerchat -- $(ARGS)

# magic-wormhole and its mailbox server and transit relay (PyPI), in a venv under
# target/, for the bench's `wormhole` group (`make bench ARGS=wormhole`); without them
# that group prints a skip line.
wormhole-venv:
	python3 -m venv target/wormhole-venv
	target/wormhole-venv/bin/pip install magic-wormhole magic-wormhole-mailbox-server magic-wormhole-transit-relay

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# The graphical client: the client core with its web page on 127.0.0.1 (prints the
# address with its token and opens a browser when there is one).
gui:
	$(CARGO) run --release --quiet --bin peerchat-client -- --gui $(ARGS)

# Browser end-to-end tests in real headless Chromium (Debian's chromium + Playwright for
# Python; .ci/run installs both). Missing tools fail the run, they never skip it.
test-browser:
	$(CARGO) build --bins
	python3 tests/browser/test_gui.py

# PNGs of the page's main screens (login, chat with two sessions, transfers).
gui-screenshots:
	$(CARGO) build --bins
	python3 tests/browser/screenshots.py
