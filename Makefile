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
	$(MAKE) test-postgres
	$(MAKE) test-browser

# The server suite again with every test server on a real PostgreSQL instead of SQLite
# (PEERCHAT_TEST_DB=postgres: tests/common starts one from Debian's packages in a
# temporary folder, one database per server, and fails if PostgreSQL is missing). Part
# of `make test`: every test file that starts a server, except
#   properties  (no server at all: parsers only),
#   relay       (the relay process alone: it has no database),
#   server_ca   (a client checking a CA-signed certificate: the store sees logins only),
#   nat         (root and network namespaces: its server runs inside a namespace that
#                does not reach the test PostgreSQL on the host's loopback),
#   cluster, postgres_store (on PostgreSQL in every `cargo test` already).
# Each test binary copies one `initdb` kept in target/tmp (instead of running initdb,
# seconds of CPU each) and runs with fsync and synchronous_commit off (test data only).
# Measured 2026-12-02 on this 2-core machine shared by five builds (load average 8-95):
# 8.6 and 10.1 minutes for the whole list; the slowest files are protocol_doc (59-91 s
# against 12.5 s on SQLite: it starts one server, so one database, per example, in
# turn), peer_hardening, files, server_limits and sessions (33-46 s each).
PG_SUITE = accounts attacks_round2 client_cli docs_promises encryption faults file_hardening files flags gui_api hostile \
	hostile_text identity_keys ladder load login_limits peer_encryption peer_hardening \
	presence protocol_doc queued_offers reverse scale server_limits server_messages \
	session_log sessions tui
# A one-minute check: accounts, logins, blocks, the session log, presence, faults and
# restarts.
PG_QUICK = accounts session_log presence faults

# The tests mostly wait (for servers, clients, timeouts), not compute: four at a time
# took the whole list from 11 min 51 s to 3 min 11 s here (2026-12-02, load 5-8), all
# passing; `cargo test`'s default is one per core.
PG_TEST_THREADS ?= 4

test-postgres:
	PEERCHAT_TEST_DB=postgres $(CARGO) test --no-fail-fast $(addprefix --test ,$(PG_SUITE)) -- --test-threads=$(PG_TEST_THREADS)

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
	python3 tests/browser/test_gui_audit.py

# PNGs of the page's main screens (login, chat with two sessions, transfers).
gui-screenshots:
	$(CARGO) build --bins
	python3 tests/browser/screenshots.py
