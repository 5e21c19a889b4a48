"""Browser end-to-end tests of the web front end in real headless Chromium.

Run by `make test` (target test-browser) after `cargo build --bins`. Each scenario
starts a real server, real terminal clients and a real `peerchat-client --gui`, and
drives the page only through roles and accessible names, as a person with a screen
reader would. A missing browser or Playwright fails the run; nothing is skipped.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Lab, register_in_page  # noqa: E402


def test_login_chat_files_and_server_death():
    lab = Lab()
    try:
        lab.start_server()
        share = os.path.join(lab.dir, "bob-share")
        os.makedirs(share)
        shared = bytes(range(256)) * 4096  # 1 MiB
        with open(os.path.join(share, "manual.pdf"), "wb") as f:
            f.write(shared)
        bob = lab.terminal("bob", share=share)
        _, url = lab.gui("alice")
        page = lab.browser()

        # Log in through the page; the token leaves the address bar.
        register_in_page(page, url, "alice")
        assert "token" not in page.url, page.url
        page.get_by_role("button", name="Chat with bob").wait_for()

        # Chat with the terminal client, both ways.
        page.get_by_role("button", name="Chat with bob").click()
        bob.expect("* alice wants to chat")
        bob.send("\\accept alice")
        page.get_by_role("tab", name=re.compile("^bob")).wait_for()
        page.get_by_role("textbox", name="Message").fill("hello bob, from the browser")
        page.get_by_role("button", name="Send", exact=True).click()
        bob.expect("alice: hello bob, from the browser")
        hostile = "<img src=x onerror=document.title='owned'> <b>bold?</b>"
        bob.send(hostile)
        log = page.get_by_role("log", name="Messages")
        log.get_by_text(hostile).wait_for()
        assert log.locator("img").count() == 0 and log.locator("b").count() == 0
        assert page.title() == "peerchat"
        own = log.locator("li.own")
        assert own.count() == 1 and "hello bob" in own.inner_text()

        # A file offer from the terminal: accept it in the page, watch it reach 100%.
        big = os.path.join(lab.dir, "holiday.bin")
        with open(big, "wb") as f:
            f.write(os.urandom(3 * 1024 * 1024))
        bob.send("\\send " + big)
        page.get_by_role("button", name="Accept file holiday.bin").click()
        status = page.get_by_label("Status of holiday.bin")
        page.wait_for_function(
            "() => { const s = document.querySelector('[aria-label=\"Status of holiday.bin\"]');"
            " return s && /100%/.test(s.textContent) && /verified/.test(s.textContent); }",
            timeout=harness.WAIT * 1000,
        )
        assert "verified" in status.inner_text()
        assert page.get_by_label("Progress of holiday.bin").get_attribute("value") == "100"
        page.get_by_role("button", name="Save holiday.bin").wait_for()

        # Fetch from bob's share.
        page.get_by_role("button", name="All", exact=True).click()
        page.get_by_role("button", name="Fetch manual.pdf from bob").click()
        page.wait_for_function(
            "() => { const s = document.querySelector('[aria-label=\"Status of manual.pdf\"]');"
            " return s && /verified/.test(s.textContent); }",
            timeout=harness.WAIT * 1000,
        )

        # Send a file from the page with the file picker; bob accepts in the terminal.
        note = os.path.join(lab.dir, "from-page.txt")
        with open(note, "w") as f:
            f.write("picked in the browser\n")
        page.get_by_label("Send a file", exact=True).set_input_files(note)
        m = bob.expect_re(r"\* \[(\d+)\] alice offers from-page\.txt")
        bob.send("\\accept " + m.group(1))
        page.wait_for_function(
            "() => { const s = document.querySelector('[aria-label=\"Status of from-page.txt\"]');"
            " return s && /verified/.test(s.textContent); }",
            timeout=harness.WAIT * 1000,
        )

        # Drag and drop onto the chat: the page uploads what was dropped and offers it.
        page.evaluate(
            """() => {
                const dt = new DataTransfer();
                dt.items.add(new File(['dropped on the chat'], 'dropped.txt', { type: 'text/plain' }));
                const panel = document.getElementById('chat-panel');
                panel.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
                panel.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
            }"""
        )
        m = bob.expect_re(r"\* \[(\d+)\] alice offers dropped\.txt")
        bob.send("\\accept " + m.group(1))
        page.wait_for_function(
            "() => { const s = document.querySelector('[aria-label=\"Status of dropped.txt\"]');"
            " return s && /verified/.test(s.textContent); }",
            timeout=harness.WAIT * 1000,
        )

        # The server dies: a banner, the chat goes on, Reconnect after it is back.
        port = lab.server_addr
        lab.server.kill()
        page.get_by_role("alert").get_by_text("The server went away").wait_for()
        page.get_by_role("textbox", name="Message").fill("still talking without the server")
        page.get_by_role("button", name="Send", exact=True).click()
        bob.expect("alice: still talking without the server")
        lab.start_server(port)
        page.get_by_role("button", name="Reconnect").click()
        page.wait_for_function("() => document.getElementById('banner').hidden")
        assert page.get_by_role("status", name="Server connection").inner_text() == "online"
    except Exception:
        lab.dump("login_chat_files")
        raise
    finally:
        lab.close()


def test_log_out_then_log_in_again_with_a_wrong_password_first():
    lab = Lab()
    try:
        lab.start_server()
        _, url = lab.gui("dave")
        page = lab.browser()
        register_in_page(page, url, "dave")
        page.get_by_role("button", name="Log out").click()
        page.get_by_text("The client has stopped").wait_for()

        # A new client on the same data folder; a wrong password first.
        _, url = lab.gui("dave")
        page.goto(url)
        page.get_by_role("button", name="No").click()
        page.get_by_label("Username").fill("dave")
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("Password", exact=True).fill("not the password")
        assert page.get_by_label("Repeat the password").is_hidden()
        page.get_by_role("button", name="Continue").click()
        messages = page.get_by_role("list", name="Login messages")
        messages.get_by_text(re.compile("invalid username or password")).wait_for()
        page.get_by_label("Username").fill("dave")
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("Password", exact=True).fill(harness.PW)
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("Folder to share (empty for none)").wait_for()
        page.get_by_role("button", name="Continue").click()
        page.get_by_role("heading", name="Online users").wait_for()
        page.get_by_text("dave (you)").wait_for()
    except Exception:
        lab.dump("relogin")
        raise
    finally:
        lab.close()


def main():
    harness.need_tools()
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    failed = 0
    for test in tests:
        start = time.time()
        try:
            test()
            print(f"test {test.__name__} ... ok ({time.time() - start:.1f} s)")
        except Exception as e:  # noqa: BLE001 - report every failure, then fail
            failed += 1
            print(f"test {test.__name__} ... FAILED ({e.__class__.__name__}: {e})")
    print(f"browser tests: {len(tests) - failed} passed; {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
