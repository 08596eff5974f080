#!/usr/bin/env python3
"""End-to-end test of the pages the mails link to and of gRPC-Web, in a real headless Chromium.

    pip install -r tests/e2e/requirements.txt   # Playwright's driver; the browser is Debian `chromium`
    ROSTER_BIN=target/debug/roster python tests/e2e/test_browser.py
    # on PostgreSQL: E2E_DATABASE_URL=postgres://... (tests/run.sh does it)

The real `roster` binary, with ROSTER_PUBLIC_URL pointing at itself, and Debian's chromium driven
by Playwright (no browser download). Cases: the owner opens the activation link from the mail
and the account is active; an invited user opens the invitation link, the page asks for a
password, shows the policy's refusal beside the field, accepts a good one, and that password logs
in over gRPC; a password-reset link sets a new password that logs in (the old one no longer
does); the pages load nothing but roster's own files and break no rule of their
Content-Security-Policy; a page of an origin ROSTER_CORS_ORIGINS names calls roster over gRPC-Web,
and one of another origin is refused by CORS. One PASS/FAIL line per case, then
`N passed, M failed`.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_outside_clients import (  # noqa: E402 - the shared helpers live next to this file
    MAIL_TIMEOUT,
    PASSWORD,
    Proc,
    Runner,
    check,
    free_port,
    unique_signup,
    wait_serving,
    wait_until,
)
from test_totp_pyotp import Client, refused  # noqa: E402

PAGE_TIMEOUT_MS = 15_000
NEW_PASSWORD = "An0ther-Passw0rd!"


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def mail_texts(raw: bytes) -> tuple[str, str, str]:
    """(To, Subject, text) of a message."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    texts = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            texts.append(part.get_content())
    return str(msg.get("To", "")), str(msg.get("Subject", "")), "\n".join(texts)


class Origin:
    """Another web origin: serves one page that calls roster over gRPC-Web with fetch()."""

    PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>app</title></head>
<body><p>another origin</p></body></html>"""

    def __init__(self) -> None:
        page = self.PAGE

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


# A gRPC-Web call from the page: a Login with wrong credentials, whose refusal comes back in the
# exposed grpc-status header (or the fetch fails, when CORS refuses the origin).
GRPC_WEB_FROM_PAGE = """async (roster) => {
  const encoder = new TextEncoder();
  const field = (n, s) => { const b = encoder.encode(s); return [(n << 3) | 2, b.length, ...b]; };
  const message = Uint8Array.from([...field(1, "no-such-account"), ...field(2, "x@example.com"), ...field(3, "nope")]);
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  try {
    const response = await fetch(roster + "/roster.v1.AuthService/Login", {
      method: "POST",
      headers: {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
      body: frame,
    });
    return {ok: true, status: response.status, grpc: response.headers.get("grpc-status")};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}"""


def main() -> int:
    roster_bin = os.environ.get("ROSTER_BIN")
    if not roster_bin:
        print("ROSTER_BIN must name the built roster binary", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    roster_bin = str(Path(roster_bin).resolve())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    r = Runner()
    st = r.state
    tmp = Path(tempfile.mkdtemp(prefix="roster-browser-"))
    database_url = os.environ.get("E2E_DATABASE_URL") or f"sqlite://{tmp / 'roster.db'}"
    mail_dir = tmp / "mail"
    procs: list[Proc] = []
    allowed, other = Origin(), Origin()
    auth, users = "roster.v1.AuthService", "roster.v1.UserService"
    client: Client | None = None
    playwright = browser = None
    seen_requests: list[str] = []
    console_problems: list[str] = []

    def link_to(address: str, path: str, after: float = 0.0) -> str:
        """The newest link to `path` in a mail to `address` written after `after`."""

        def found():
            for mail in sorted(mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True):
                if mail.stat().st_mtime < after:
                    continue
                to, _, text = mail_texts(mail.read_bytes())
                if address not in to:
                    continue
                match = re.search(r"(https?://[^\s\"'<>]+/" + re.escape(path) + r"\?token=[^\s\"'<>]+)", text)
                if match:
                    return match.group(1)
            return None

        return wait_until(f"a mail to {address} with a /{path} link", found, MAIL_TIMEOUT)

    def open_page(url: str):
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.on("request", lambda request: seen_requests.append(request.url))
        page.on("console", lambda message: console_problems.append(message.text)
                if message.type in ("error", "warning") else None)
        page.on("pageerror", lambda error: console_problems.append(f"page error: {error}"))
        page.goto(url)
        return context, page

    try:
        def roster_serves():
            port = free_port()
            addr = f"127.0.0.1:{port}"
            env = dict(os.environ)
            env.update(
                ROSTER_LISTEN=addr,
                ROSTER_PUBLIC_URL=f"http://{addr}",
                ROSTER_DATABASE_URL=database_url,
                ROSTER_MAIL_URL=f"file://{mail_dir}",
                ROSTER_CORS_ORIGINS=allowed.url,
            )
            proc = Proc("roster", [roster_bin, "serve"], tmp / "roster.log", env)
            procs.append(proc)
            wait_serving(proc, addr)
            st.update(addr=addr, base=f"http://{addr}")

        def chromium_starts():
            nonlocal playwright, browser
            executable = find_chromium()
            check(executable is not None, "no chromium (Debian package chromium) on this machine")
            from playwright.sync_api import sync_playwright

            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 # This machine's network is closed: no
                                                 # background connections to refuse.
                                                 args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                                                       "--disable-quic", "--no-first-run",
                                                       "--disable-background-networking",
                                                       "--disable-component-update", "--disable-sync"])
            st["browser"] = True

        def the_owner_activates_from_the_mail_link():
            nonlocal client
            addr, _ = r.need("addr", "browser")
            client = Client(addr)
            signup = unique_signup()
            created = client.call(auth, "SignUp", {
                "account_name": signup["accountName"], "first_name": signup["firstName"],
                "last_name": signup["lastName"], "email": signup["email"], "password": PASSWORD,
            })
            link = link_to(signup["email"], "activate")
            check(link.startswith(st["base"] + "/activate?token="), f"the link is {link}")
            context, page = open_page(link)
            page.wait_for_selector("text=Your account is active")
            context.close()
            login = {"tenant": created["tenant_slug"], "login": signup["email"], "password": PASSWORD}
            st["token"] = client.call(auth, "Login", login)["access_token"]
            st["tenant"] = created["tenant_slug"]

        def an_invited_user_chooses_a_password_on_the_page():
            tenant, token = r.need("tenant", "token")
            address = f"invited.{time.time_ns()}@example.com"
            client.call(users, "CreateUser", {"email": address, "first_name": "Ivy", "last_name": "Invited",
                                              "roles": ["REPORTS"]}, token)
            context, page = open_page(link_to(address, "activate"))
            page.wait_for_selector("#password", state="visible")
            # The policy's refusal, beside the field it is about.
            page.fill("#password", "short")
            page.fill("#confirm", "short")
            page.click("#submit")
            page.wait_for_function("document.getElementById('password-error').textContent.length > 0")
            error = page.text_content("#password-error")
            check("character" in error.lower() or "least" in error.lower(), f"the field's error is {error!r}")
            # Two passwords that differ are caught before any call.
            page.fill("#password", PASSWORD)
            page.fill("#confirm", PASSWORD + "x")
            page.click("#submit")
            page.wait_for_selector("text=The two passwords differ")
            page.fill("#confirm", PASSWORD)
            page.click("#submit")
            page.wait_for_selector("text=Your account is active")
            context.close()
            reply = client.call(auth, "Login", {"tenant": tenant, "login": address, "password": PASSWORD})
            check(reply.get("access_token"), f"no token: {reply}")
            st["invited"] = address

        def a_reset_link_sets_a_password_that_logs_in():
            tenant, address = r.need("tenant", "invited")
            asked = time.time() - 1
            client.call(auth, "RequestPasswordReset", {"tenant": tenant, "email": address})
            context, page = open_page(link_to(address, "reset-password", after=asked))
            page.fill("#password", NEW_PASSWORD)
            page.fill("#confirm", NEW_PASSWORD)
            page.click("#submit")
            page.wait_for_selector("text=Your password is changed")
            # The same link a second time: refused, and said so.
            page.reload()
            page.fill("#password", NEW_PASSWORD)
            page.fill("#confirm", NEW_PASSWORD)
            page.click("#submit")
            page.wait_for_selector("text=This link is invalid or has already been used")
            context.close()
            reply = client.call(auth, "Login", {"tenant": tenant, "login": address, "password": NEW_PASSWORD})
            check(reply.get("access_token"), f"no token: {reply}")
            refused(lambda: client.call(auth, "Login", {"tenant": tenant, "login": address, "password": PASSWORD}),
                    "UNAUTHENTICATED")

        def the_pages_load_only_roster_and_break_no_policy():
            (base,) = r.need("base")
            check(seen_requests, "no requests seen")
            foreign = [url for url in seen_requests if not url.startswith(base + "/")]
            check(not foreign, f"requests beyond roster: {foreign}")
            check(not console_problems, f"console: {console_problems}")
            import urllib.request

            with urllib.request.urlopen(f"{base}/activate", timeout=5) as response:  # noqa: S310 - loopback
                policy = response.headers.get("content-security-policy", "")
                check("default-src 'none'" in policy and "script-src 'self'" in policy, f"CSP: {policy!r}")
                check(response.headers.get("referrer-policy") == "no-referrer", "no Referrer-Policy")

        def a_named_origin_calls_grpc_web_and_another_is_refused():
            (base,) = r.need("base")
            for origin, allowed_here in [(allowed, True), (other, False)]:
                context = browser.new_context()
                page = context.new_page()
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                page.goto(origin.url)
                result = page.evaluate(GRPC_WEB_FROM_PAGE, base)
                context.close()
                if allowed_here:
                    check(result.get("ok") and result.get("grpc") == "16",
                          f"from {origin.url} (allowed): {result}")
                else:
                    check(not result.get("ok"), f"from {origin.url} (not allowed) the call went through: {result}")

        r.case("roster serves, its public URL pointing at itself", roster_serves)
        r.case("headless Chromium starts", chromium_starts)
        r.case("the owner opens the activation link from the mail and the account is active",
               the_owner_activates_from_the_mail_link)
        r.case("an invited user chooses a password on the page (the policy's error by the field), and logs in",
               an_invited_user_chooses_a_password_on_the_page)
        r.case("a password-reset link sets a new password that logs in; the link works once",
               a_reset_link_sets_a_password_that_logs_in)
        r.case("the pages load nothing but roster's own files and break no Content-Security-Policy rule",
               the_pages_load_only_roster_and_break_no_policy)
        r.case("a page of an origin ROSTER_CORS_ORIGINS names calls gRPC-Web; another origin is refused",
               a_named_origin_calls_grpc_web_and_another_is_refused)
    finally:
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        if client is not None:
            client.close()
        for p in procs:
            p.stop()
        allowed.close()
        other.close()
        if r.failed or os.environ.get("E2E_VERBOSE"):
            for p in procs:
                print(f"----- {p.name} log ({p.log}) -----")
                print(p.tail(60))
        if os.environ.get("E2E_KEEP"):
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
