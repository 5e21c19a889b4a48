"""`make gui-screenshots`: PNGs of the page's main screens in target/screenshots/.

Starts a real server, two terminal clients and a GUI client, drives the page in
headless Chromium and photographs: the login, a chat with two sessions, and transfers.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import PW, Lab  # noqa: E402

OUT = os.path.join(harness.ROOT, "target", "screenshots")


def main():
    harness.need_tools()
    os.makedirs(OUT, exist_ok=True)
    lab = Lab()
    try:
        lab.start_server()
        share = os.path.join(lab.dir, "share")
        os.makedirs(share)
        for name, size in [("holiday-photos.zip", 48_000_000), ("thesis-final.pdf", 2_400_000), ("notes.txt", 1800)]:
            with open(os.path.join(share, name), "wb") as f:
                f.write(os.urandom(min(size, 4_000_000)))
        bob = lab.terminal("bob", share=share)
        carol = lab.terminal("carol")
        _, url = lab.gui("alice")
        page = lab.browser()

        page.goto(url)
        page.get_by_role("button", name="Yes").click()
        page.get_by_label("Username").fill("alice")
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("Choose a password").fill(PW)
        page.get_by_label("Repeat the password").fill(PW)
        time.sleep(0.3)
        page.screenshot(path=os.path.join(OUT, "login.png"))
        page.get_by_role("button", name="Continue").click()
        page.get_by_label("Folder to share (empty for none)").wait_for()
        page.get_by_role("button", name="Continue").click()

        page.get_by_role("button", name="Chat with bob").click()
        bob.expect("* alice wants to chat")
        bob.send("\\accept alice")
        page.get_by_role("tab", name=re.compile(r"^bob(,|$)")).wait_for()
        page.get_by_role("textbox", name="Message").fill("Hi Bob! Did you get the photos from the trip?")
        page.get_by_role("button", name="Send", exact=True).click()
        bob.expect("alice: Hi Bob!")
        bob.send("Not yet, I'll send them now. The thesis is in my shared folder.")
        carol.send("\\connect alice")
        page.get_by_role("alertdialog", name="Chat request from carol").wait_for()
        page.get_by_role("button", name="Accept chat from carol").click()
        page.get_by_role("tab", name=re.compile(r"^carol(,|$)")).wait_for()
        carol.send("Lunch at one?")
        page.get_by_role("textbox", name="Message").fill("Sure, see you there.")
        page.get_by_role("button", name="Send", exact=True).click()
        carol.expect("alice: Sure")
        bob.send("Sending the zip now.")
        page.get_by_role("tab", name=re.compile(r"^bob(,|$)")).click()
        carol.send("Or half past, if that suits you better.")
        page.get_by_role("tab", name=re.compile(r"^carol, 1 unread")).wait_for()
        page.get_by_role("button", name="All", exact=True).click()
        page.get_by_role("button", name="Fetch notes.txt from bob").wait_for()
        bob.send("\\send " + os.path.join(share, "holiday-photos.zip"))
        page.get_by_role("button", name="Accept file holiday-photos.zip").wait_for()
        time.sleep(0.5)
        page.screenshot(path=os.path.join(OUT, "chat.png"))

        page.get_by_role("button", name="Accept file holiday-photos.zip").click()
        page.get_by_role("button", name="Fetch thesis-final.pdf from bob").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[aria-label^=\"Status of\"]')]"
            ".filter(s => /verified/.test(s.textContent)).length >= 2",
            timeout=harness.WAIT * 1000,
        )
        page.get_by_role("button", name="Fetch notes.txt from bob").click()
        time.sleep(1.5)
        page.screenshot(path=os.path.join(OUT, "transfers.png"))
        print("screenshots in " + OUT)
    except Exception:
        lab.dump("screenshots")
        raise
    finally:
        lab.close()


if __name__ == "__main__":
    main()
