#!/usr/bin/env python3
"""End-to-end test of two-factor authentication against an independent TOTP implementation.

    pip install -r tests/e2e/requirements.txt
    ROSTER_BIN=target/debug/roster python tests/e2e/test_totp_pyotp.py

The real `roster` binary (SQLite, file mail outbox) is driven with Python grpcio (message types
found through server reflection), and every one-time code comes from pyotp, not from roster's own
code: enrolment (the otpauth:// URI parsed by pyotp, the QR code a PNG), confirmation, the
two-step login, refusal of a replayed code and of a code outside the skew window, backup codes
(each once), and a live activity watch with grpcurl that shows the two-factor login. One PASS/FAIL
line per case, then `N passed, M failed`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_outside_clients import (  # noqa: E402 - the shared helpers live next to this file
    CALL_TIMEOUT,
    MAIL_TIMEOUT,
    PASSWORD,
    Proc,
    Runner,
    check,
    find_grpcurl,
    start_server,
    token_from_message,
    unique_signup,
    wait_serving,
    wait_until,
)


class Client:
    """Unary calls by service and method name, types from server reflection (grpcio)."""

    def __init__(self, addr: str) -> None:
        import grpc
        from google.protobuf import descriptor_pool
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        self.channel = grpc.insecure_channel(addr)
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(self.channel))

    def call(self, service: str, method: str, fields: dict, token: str | None = None):
        from google.protobuf import json_format, message_factory

        m = self.pool.FindServiceByName(service).FindMethodByName(method)
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        metadata = [("authorization", f"Bearer {token}")] if token else None
        reply = stub(req_cls(**fields), timeout=CALL_TIMEOUT, metadata=metadata)
        return json_format.MessageToDict(reply, preserving_proto_field_name=True)

    def close(self) -> None:
        self.channel.close()


def refused(fn, code_name: str) -> str:
    """Runs fn, which must fail with the gRPC status `code_name`; returns the message."""
    import grpc

    try:
        fn()
    except grpc.RpcError as e:
        check(e.code().name == code_name, f"expected {code_name}, got {e.code().name}: {e.details()}")
        return e.details() or ""
    raise AssertionError(f"expected {code_name}, the call succeeded")


def main() -> int:
    roster_bin = os.environ.get("ROSTER_BIN")
    if not roster_bin:
        print("ROSTER_BIN must name the built roster binary", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    roster_bin = str(Path(roster_bin).resolve())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import pyotp

    r = Runner()
    st = r.state
    tmp = Path(tempfile.mkdtemp(prefix="roster-totp-"))
    procs: list[Proc] = []
    clients: list[Client] = []
    auth = "roster.v1.AuthService"
    two_factor = "roster.v1.TwoFactorService"
    try:
        mail_dir = tmp / "mail"

        def server_serving():
            proc, addr = start_server("roster-totp", roster_bin, tmp, f"file://{mail_dir}", "roster.db")
            procs.append(proc)
            wait_serving(proc, addr)
            st["addr"] = addr
            client = Client(addr)
            clients.append(client)
            st["client"] = client

        def owner_logs_in():
            (client,) = r.need("client")
            signup = unique_signup()
            created = client.call(auth, "SignUp", {
                "account_name": signup["accountName"],
                "first_name": signup["firstName"],
                "last_name": signup["lastName"],
                "email": signup["email"],
                "password": PASSWORD,
            })

            def activation_token():
                for path in sorted(mail_dir.glob("*.eml")):
                    to, token = token_from_message(path.read_bytes())
                    if signup["email"] in to:
                        return token
                return None

            token = wait_until("the activation mail", activation_token, MAIL_TIMEOUT)
            client.call(auth, "ActivateAccount", {"token": token})
            st["login"] = {"tenant": created["tenant_slug"], "login": signup["email"], "password": PASSWORD}
            st["token"] = client.call(auth, "Login", st["login"])["access_token"]

        def enrolment_uri_is_read_by_pyotp():
            client, token = r.need("client", "token")
            begun = client.call(two_factor, "BeginTwoFactorEnrollment", {}, token)
            parsed = pyotp.parse_uri(begun["otpauth_uri"])
            check(isinstance(parsed, pyotp.TOTP), f"not a TOTP URI: {begun['otpauth_uri']}")
            check(parsed.secret == begun["secret"], "the URI and the secret field differ")
            check(parsed.digits == 6 and parsed.interval == 30, f"digits/interval: {parsed.digits}/{parsed.interval}")
            check(parsed.name == st["login"]["login"], f"label names {parsed.name!r}")
            check(parsed.issuer, "no issuer in the URI")
            png = base64.b64decode(begun["qr_code_png_base64"])
            check(png[:8] == b"\x89PNG\r\n\x1a\n", "the QR code is not a PNG")
            st["totp"] = pyotp.TOTP(begun["secret"])

        def pyotp_code_confirms_enrolment():
            client, token, totp = r.need("client", "token", "totp")
            confirmed = client.call(two_factor, "ConfirmTwoFactor", {"code": totp.now()}, token)
            codes = confirmed.get("backup_codes", [])
            check(len(codes) == 10 and len(set(codes)) == 10, f"backup codes: {codes}")
            st["backup_codes"] = codes
            st["confirmed_at"] = time.time()
            status = client.call(two_factor, "GetTwoFactorStatus", {}, confirmed["access_token"])
            check(status.get("enabled") is True, f"status: {status}")

        def login_takes_two_steps_with_a_pyotp_code():
            client, totp, login = r.need("client", "totp", "login")
            first = client.call(auth, "Login", login)
            check(first.get("second_factor_required") is True, f"password step: {first}")
            check(not first.get("access_token"), "tokens before the second factor")
            # The confirming code's step is spent; the next step's code is within the skew.
            now = time.time()
            code = totp.at(now + 30)
            st["used_step"] = int((now + 30) // 30)
            done = client.call(auth, "CompleteLogin", {"challenge": first["challenge"], "code": code})
            check(done.get("access_token", "").startswith("rat2."), f"no access token: {done}")
            me = client.call(auth, "WhoAmI", {}, done["access_token"])
            check(me["user"]["email"] == login["login"], f"WhoAmI: {me}")
            st["used_code"] = code
            st["session_token"] = done["access_token"]

        def a_replayed_code_is_refused():
            client, login, code = r.need("client", "login", "used_code")
            challenge = client.call(auth, "Login", login)["challenge"]
            refused(lambda: client.call(auth, "CompleteLogin", {"challenge": challenge, "code": code}),
                    "UNAUTHENTICATED")
            st["open_challenge"] = challenge

        def a_code_outside_the_window_is_refused():
            client, totp, challenge = r.need("client", "totp", "open_challenge")
            far = totp.at(time.time() + 120)
            refused(lambda: client.call(auth, "CompleteLogin", {"challenge": challenge, "code": far}),
                    "UNAUTHENTICATED")

        def backup_codes_work_once():
            client, login, codes = r.need("client", "login", "backup_codes")
            challenge = client.call(auth, "Login", login)["challenge"]
            done = client.call(auth, "CompleteLogin", {"challenge": challenge, "code": codes[0]})
            check(done.get("access_token"), f"backup code login: {done}")
            again = client.call(auth, "Login", login)["challenge"]
            refused(lambda: client.call(auth, "CompleteLogin", {"challenge": again, "code": codes[0]}),
                    "UNAUTHENTICATED")

        def grpcurl_watch_shows_the_two_factor_login():
            client, addr, login, totp, token = r.need("client", "addr", "login", "totp", "session_token")
            r.need("used_step")
            argv = [find_grpcurl(), "-plaintext", "-max-time", "90", "-H", f"authorization: Bearer {token}",
                    "-d", json.dumps({"filter": {"actions": ["auth.login"]}}), addr,
                    "roster.v1.ActivityService/WatchActivity"]
            watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(watcher.stdout), daemon=True)
            reader.start()
            try:
                # grpcurl's -max-time must outlast a wait for the next TOTP step (up to 30 s) below,
                # or the watch ends before the login it should show.
                # The watch is subscribed once grpcurl has its response headers; give it a moment.
                time.sleep(1.5)
                challenge = client.call(auth, "Login", login)["challenge"]
                # A step no earlier login has spent (later than the one used), within the skew.
                step = int(time.time() // 30) + 1
                if step <= st["used_step"]:
                    time.sleep(30 - time.time() % 30 + 0.5)
                    step = int(time.time() // 30) + 1
                code = totp.at(step * 30)
                client.call(auth, "CompleteLogin", {"challenge": challenge, "code": code})
                wait_until("the watch to print the login", lambda: "second_factor" in "".join(lines)
                           or "secondFactor" in "".join(lines), 10)
            finally:
                watcher.terminate()
                try:
                    watcher.wait(5)
                except subprocess.TimeoutExpired:
                    watcher.kill()
            text = "".join(lines)
            check("auth.login" in text and "totp" in text, f"grpcurl printed: {text[:2000]}")

        r.case("server starts on sqlite and reports SERVING", server_serving)
        r.case("an activated owner logs in with a password", owner_logs_in)
        r.case("pyotp reads the otpauth:// URI; the QR code is a PNG", enrolment_uri_is_read_by_pyotp)
        r.case("a pyotp code confirms the enrolment and ten backup codes come back",
               pyotp_code_confirms_enrolment)
        r.case("login takes two steps and a pyotp code completes it", login_takes_two_steps_with_a_pyotp_code)
        r.case("a code already used is refused within its window", a_replayed_code_is_refused)
        r.case("a code from outside the skew window is refused", a_code_outside_the_window_is_refused)
        r.case("a backup code completes a login once", backup_codes_work_once)
        r.case("grpcurl's live activity watch shows the two-factor login", grpcurl_watch_shows_the_two_factor_login)
    finally:
        for client in clients:
            client.close()
        for p in procs:
            p.stop()
        if r.failed or os.environ.get("E2E_VERBOSE"):
            for p in procs:
                print(f"----- {p.name} log ({p.log}) -----")
                print(p.tail())
        if os.environ.get("E2E_KEEP"):
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
