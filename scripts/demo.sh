#!/usr/bin/env bash
# make demo: a server and two scripted clients in a temporary folder, on free ports.
# Registers alice and bob, opens a chat session, exchanges lines, pushes a file,
# fetches a file, checks both byte for byte, shuts down and prints the transcript.
set -euo pipefail

BIN=${BIN:-target/release}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

# wait_for FILE TEXT: until FILE contains TEXT (at most 20 s).
wait_for() {
    for _ in $(seq 1 200); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: timed out waiting for '$2' in $(basename "$1")" >&2
    cat "$1" >&2
    exit 1
}

mkdir -p "$work/alice-share" "$work/bob-files"
printf 'The quarterly numbers, in plain text.\n' > "$work/alice-share/report.txt"
head -c 3000000 /dev/urandom > "$work/bob-files/photo.bin"

step "start the server on a free port"
"$BIN/peerchat-server" --addr 127.0.0.1:0 --db "$work/server.db" --bcrypt-cost 4 \
    > "$work/server.out" 2> "$work/server.log" &
pids+=($!)
wait_for "$work/server.out" "listening on"
addr=$(sed -n 's/^listening on //p' "$work/server.out")
wait_for "$work/server.out" "fingerprint: "
fingerprint=$(sed -n 's/^TLS certificate SHA-256 fingerprint: //p' "$work/server.out")
echo "server at $addr, certificate fingerprint $fingerprint"

# Each client reads its commands from a FIFO held open by this script.
start_client() {
    local name=$1; shift
    mkfifo "$work/$name.in"
    "$BIN/peerchat-client" --server "$addr" --server-fingerprint "$fingerprint" --port 0 --data-dir "$work/data" "$@" \
        < "$work/$name.in" > "$work/$name.out" 2>&1 &
    pids+=($!)
    exec {fd}> "$work/$name.in"
    eval "${name}_fd=$fd"
}
say() { local fd_var="${1}_fd"; printf '%s\n' "$2" >&"${!fd_var}"; }

step "register alice (sharing a folder) and bob"
start_client alice --share "$work/alice-share"
say alice y; say alice alice; say alice alice-secret
wait_for "$work/alice.out" "Welcome, alice."
start_client bob
say bob y; say bob bob; say bob bob-secret
wait_for "$work/bob.out" "Welcome, bob."

step "bob opens a session with alice; they chat directly"
say bob '\list'
say bob '\connect alice'
wait_for "$work/alice.out" "bob wants to chat"
say alice '\accept bob'
wait_for "$work/bob.out" "session with alice open"
say bob "Hi alice, sending you a photo."
wait_for "$work/alice.out" "bob: Hi alice"
say alice "Thanks bob! Grab my report from my shared folder."
wait_for "$work/bob.out" "alice: Thanks bob"

step "bob pushes a file; alice accepts it"
say bob "\\send $work/bob-files/photo.bin"
wait_for "$work/alice.out" "offers photo.bin"
say alice '\accept 1'
wait_for "$work/alice.out" "receive photo.bin from bob: done, verified"

step "bob searches and fetches from alice's shared folder"
say bob '\search REPORT'
wait_for "$work/bob.out" "report.txt"
say bob '\fetch alice report.txt'
wait_for "$work/bob.out" "fetch report.txt from alice: done, verified"

step "check both files byte for byte"
cmp "$work/bob-files/photo.bin" "$work/data/alice/downloads/photo.bin"
cmp "$work/alice-share/report.txt" "$work/data/bob/downloads/report.txt"
echo "photo.bin and report.txt arrived intact"

step "close the session and quit"
say bob '\close'
wait_for "$work/alice.out" "bob closed the session"
say alice '\quit'; say bob '\quit'
wait_for "$work/alice.out" "Bye."
wait_for "$work/bob.out" "Bye."
kill -INT "${pids[0]}"
wait "${pids[0]}" || true

step "alice's terminal"; cat "$work/alice.out"
step "bob's terminal"; cat "$work/bob.out"
step "the server's log of sessions and transfers"
"$BIN/peerchat-server" sessions --db "$work/server.db" 2>/dev/null
step "demo finished: everything verified"
