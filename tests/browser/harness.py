"""Starts the real peerchat binaries and a real headless Chromium for the browser tests.

No mocks: a real `peerchat-server` on 127.0.0.1:0 with a temporary database, terminal
clients driven through pipes, a `peerchat-client --gui`, and Debian's chromium driven by
Playwright (never a downloaded browser). Every wait is bounded; every process is killed
at the end.
"""

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("PEERCHAT_TARGET", os.path.join(ROOT, "target", "debug"))
SERVER = os.path.join(TARGET, "peerchat-server")
CLIENT = os.path.join(TARGET, "peerchat-client")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WAIT = 20.0
PW = "correct horse"


def need_tools():
    """Fails loudly (never skips) when the browser or Playwright is missing."""
    problems = []
    if not os.path.exists(CHROMIUM):
        problems.append(f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("no Playwright for Python (pip install playwright)")
    for binary in (SERVER, CLIENT):
        if not os.path.exists(binary):
            problems.append(f"no {binary} (cargo build --bins)")
    if problems:
        sys.stderr.write("browser tests cannot run:\n  " + "\n  ".join(problems) + "\n")
        sys.exit(2)


class Proc:
    """A child process whose stdout is collected on a thread."""

    def __init__(self, args, label, stdin=True):
        self.label = label
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.out = ""
        self.lines = queue.Queue()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            chunk = self.proc.stdout.read1(4096) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(1)
            if not chunk:
                return
            with self.lock:
                self.out += chunk.decode("utf-8", "replace")

    def output(self):
        with self.lock:
            return self.out

    def expect(self, text, after=0, wait=WAIT):
        """Waits for `text` in stdout (from offset `after`); returns the offset past it."""
        deadline = time.time() + wait
        while time.time() < deadline:
            out = self.output()
            i = out.find(text, after)
            if i >= 0:
                return i + len(text)
            time.sleep(0.05)
        raise AssertionError(f"[{self.label}] no {text!r} on stdout:\n{self.output()}")

    def expect_re(self, pattern, wait=WAIT):
        deadline = time.time() + wait
        while time.time() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"[{self.label}] no /{pattern}/ on stdout:\n{self.output()}")

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Lab:
    """A server, clients and a browser, all torn down by `close`."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="peerchat-browser-")
        self.procs = []
        self.server = None
        self.server_addr = None
        self.pw = None
        self.context = None

    def start_server(self, addr="127.0.0.1:0"):
        server = Proc(
            [SERVER, "--addr", addr, "--db", os.path.join(self.dir, "server.db"), "--bcrypt-cost", "4"],
            "server",
            stdin=False,
        )
        self.procs.append(server)
        m = server.expect_re(r"listening on (\S+)")
        fp = server.expect_re(r"TLS certificate SHA-256 fingerprint: (\S+)")
        self.server = server
        self.server_addr = m.group(1)
        self.fingerprint = fp.group(1)
        return server

    def terminal(self, name, share=None):
        """A registered terminal client `name`."""
        args = [CLIENT, "--server", self.server_addr, "--server-fingerprint", self.fingerprint, "--port", "0",
                "--data-dir", os.path.join(self.dir, "data-" + name)]
        if share:
            args += ["--share", share]
        c = Proc(args, name)
        self.procs.append(c)
        c.expect("Are you a new client? (Y/N): ")
        c.send("y")
        c.expect("Choose a username: ")
        c.send(name)
        c.expect("Choose a password: ")
        c.send(PW)
        c.expect(f"Welcome, {name}.")
        return c

    def gui(self, label="gui"):
        """A `peerchat-client --gui`; returns (process, url)."""
        g = Proc([CLIENT, "--server", self.server_addr, "--server-fingerprint", self.fingerprint,
                  "--gui", "--no-browser", "--port", "0",
                  "--data-dir", os.path.join(self.dir, "data-" + label)], label, stdin=False)
        self.procs.append(g)
        m = g.expect_re(r"GUI: (http://127\.0\.0\.1:\d+/#token=[0-9a-f]{32})")
        return g, m.group(1)

    def browser(self):
        from playwright.sync_api import sync_playwright
        self.pw = sync_playwright().start()
        profile = os.path.join(self.dir, "chromium-profile")
        self.context = self.pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            viewport={"width": 1360, "height": 860},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        self.context.set_default_timeout(WAIT * 1000)
        return self.context.pages[0] if self.context.pages else self.context.new_page()

    def dump(self, name):
        """On failure: a screenshot and every process's output, for the reader."""
        out = os.path.join(ROOT, "target", "browser-failures")
        os.makedirs(out, exist_ok=True)
        try:
            if self.context and self.context.pages:
                self.context.pages[0].screenshot(path=os.path.join(out, name + ".png"))
        except Exception as e:  # noqa: BLE001 - the failure itself matters more
            sys.stderr.write(f"no screenshot: {e}\n")
        for p in self.procs:
            sys.stderr.write(f"--- {p.label} stdout ---\n{p.output()[-3000:]}\n")

    def close(self):
        try:
            if self.context:
                self.context.close()
            if self.pw:
                self.pw.stop()
        finally:
            for p in self.procs:
                try:
                    p.kill()
                except Exception:  # noqa: BLE001 - best effort at teardown
                    pass
            shutil.rmtree(self.dir, ignore_errors=True)


def register_in_page(page, url, name):
    """Logs in through the page as a new user `name`."""
    page.goto(url)
    page.get_by_role("button", name="Yes").click()
    page.get_by_label("Username").fill(name)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Choose a password").fill(PW)
    page.get_by_label("Repeat the password").fill(PW)
    page.get_by_role("button", name="Continue").click()
    # No --share: the page asks which folder to share; empty shares nothing.
    page.get_by_label("Folder to share (empty for none)").wait_for()
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Online users").wait_for()
