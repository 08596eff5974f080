#!/usr/bin/env python3
"""End-to-end test of webhooks against an independent Standard Webhooks implementation.

    pip install -r tests/e2e/requirements.txt
    ROSTER_BIN=target/debug/roster python tests/e2e/test_webhooks.py
    # on PostgreSQL: E2E_DATABASE_URL=postgres://... (a database of its own; tests/run.sh does it)

The real `roster` binary (SQLite unless E2E_DATABASE_URL names a database, file mail outbox) and
a real HTTP receiver in this process, which checks every request with PyPI `standardwebhooks`
(not roster's code) before it answers. The endpoint is made with grpcurl as the README shows;
the rest goes through Python grpcio. Cases: a deleted user's event reaches the receiver and the
feed exactly once each; a receiver that fails its first attempts gets retries, in order; roster
stops with deliveries pending and, started again, delivers every one, none twice as delivered in
the log; a tampered body fails verification (the verifier is real). One PASS/FAIL line per case,
then `N passed, M failed`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_outside_clients import (  # noqa: E402 - the shared helpers live next to this file
    CALL_TIMEOUT,
    PASSWORD,
    Proc,
    Runner,
    check,
    find_grpcurl,
    free_port,
    sign_up_and_activate,
    wait_serving,
    wait_until,
)
from test_totp_pyotp import Client  # noqa: E402

DELIVERY_TIMEOUT = 30.0


class Receiver:
    """A threaded HTTP server: verifies each request with standardwebhooks, then answers 500 to
    the first `fail_first` requests (or to all while `failing`), else 204."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.fail_first = 0
        self.failing = False
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                from standardwebhooks.webhooks import Webhook, WebhookVerificationError

                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                    verified, error = True, ""
                except WebhookVerificationError as e:
                    payload, verified, error = json.loads(body or b"{}"), False, str(e)
                with receiver.lock:
                    if receiver.failing or len(receiver.requests) < receiver.fail_first:
                        answer = 500
                    else:
                        answer = 204
                    receiver.requests.append({
                        "id": headers.get("webhook-id", ""),
                        "headers": headers,
                        "body": body,
                        "payload": payload,
                        "verified": verified,
                        "error": error,
                        "answer": answer,
                    })
                self.send_response(answer)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/roster-hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["answer"] == 204]

    def all(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()


def start_roster(roster_bin: str, tmp: Path, name: str, database_url: str, mail_dir: Path) -> tuple[Proc, str]:
    addr = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env.update(
        ROSTER_LISTEN=addr,
        ROSTER_DATABASE_URL=database_url,
        ROSTER_MAIL_URL=f"file://{mail_dir}",
        ROSTER_PUBLIC_URL="http://localhost:8080",
        # The receiver is on this machine's loopback.
        ROSTER_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8,::1",
        ROSTER_WEBHOOK_RETRY_BASE="200ms",
    )
    proc = Proc(name, [roster_bin, "serve"], tmp / f"{name}.log", env)
    wait_serving(proc, addr)
    return proc, addr


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
    tmp = Path(tempfile.mkdtemp(prefix="roster-webhooks-"))
    database_url = os.environ.get("E2E_DATABASE_URL") or f"sqlite://{tmp / 'roster.db'}"
    mail_dir = tmp / "mail"
    procs: list[Proc] = []
    clients: list[Client] = []
    receiver = Receiver()
    auth, users = "roster.v1.AuthService", "roster.v1.UserService"
    hooks, events = "roster.v1.WebhookService", "roster.v1.EventService"

    def serve(name: str) -> None:
        proc, addr = start_roster(roster_bin, tmp, name, database_url, mail_dir)
        procs.append(proc)
        st["proc"], st["addr"] = proc, addr
        client = Client(addr)
        clients.append(client)
        st["client"] = client

    def all_deliveries(client: Client, token: str, endpoint_id: str) -> list[dict]:
        found, page = [], ""
        while True:
            reply = client.call(hooks, "ListWebhookDeliveries",
                                {"endpoint_id": endpoint_id, "page_size": 100, "page_token": page}, token)
            found += reply.get("deliveries", [])
            page = reply.get("next_page_token", "")
            if not page:
                return found

    def feed(client: Client, token: str, after: str) -> list[dict]:
        found, cursor = [], after
        while True:
            reply = client.call(events, "ListEvents", {"after": cursor, "page_size": 1000}, token)
            found += reply.get("events", [])
            cursor = reply.get("next_cursor", cursor)
            if not reply.get("more"):
                return found

    def new_user(client: Client, token: str, email: str) -> str:
        created = client.call(users, "CreateUser", {
            "email": email, "first_name": "Lead", "last_name": "Agent", "roles": ["REPORTS"],
            "password": PASSWORD,
        }, token)
        return created["user"]["id"]

    try:
        def roster_serves():
            serve("roster-1")

        def owner_logs_in():
            (client,) = r.need("client")
            created, st["login"] = sign_up_and_activate(client, mail_dir)
            st["token"] = client.call(auth, "Login", st["login"])["access_token"]
            st["tenant_id"] = created["tenant_id"]

        def grpcurl_creates_the_endpoint():
            addr, token = r.need("addr", "token")
            argv = [find_grpcurl(), "-plaintext", "-max-time", str(int(CALL_TIMEOUT)),
                    "-H", f"authorization: Bearer {token}",
                    "-d", json.dumps({"url": receiver.url, "event_types": ["user.*"]}),
                    addr, f"{hooks}/CreateWebhookEndpoint"]
            out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=CALL_TIMEOUT + 10)
            check(out.returncode == 0, f"grpcurl: {out.stdout} {out.stderr}")
            reply = json.loads(out.stdout)
            check(reply["signingSecret"].startswith("whsec_"), f"secret: {reply}")
            receiver.secret = reply["signingSecret"]
            st["endpoint"] = reply["endpoint"]

        def a_deleted_users_event_reaches_the_receiver_and_the_feed_once_each():
            client, token, endpoint = r.need("client", "token", "endpoint")
            receiver.fail_first = 2  # the first two attempts fail: retries
            user_id = new_user(client, token, f"lead.{time.time_ns()}@example.com")
            client.call(users, "DeleteUser", {"user_id": user_id}, token)

            def deleted():
                return [req for req in receiver.accepted()
                        if req["payload"].get("type") == "user.deleted"
                        and req["payload"]["data"]["target_id"] == user_id]

            got = wait_until("user.deleted at the receiver", deleted, DELIVERY_TIMEOUT)
            time.sleep(1.5)  # nothing more comes for it
            got = deleted()
            check(len(got) == 1, f"user.deleted accepted {len(got)} times")
            in_feed = [e for e in feed(client, token, endpoint["cursor"])
                       if e["type"] == "user.deleted" and e["target_id"] == user_id]
            check(len(in_feed) == 1, f"the feed has {len(in_feed)} user.deleted events for the user")
            check(got[0]["id"] == in_feed[0]["id"], "webhook-id is not the event's id")
            requests = receiver.all()
            check(len(requests) == 4 and [q["answer"] for q in requests] == [500, 500, 204, 204],
                  f"answers: {[q['answer'] for q in requests]}")
            check(requests[0]["id"] == requests[1]["id"] == requests[2]["id"],
                  "a retry carries another webhook-id")
            st["user_id"] = user_id

        def every_request_verifies_with_standardwebhooks():
            requests = receiver.all()
            check(requests, "no requests")
            bad = [q for q in requests if not q["verified"]]
            check(not bad, f"{len(bad)} request(s) failed verification: {bad[:1]}")

        def a_tampered_body_fails_verification():
            from standardwebhooks.webhooks import Webhook, WebhookVerificationError

            request = receiver.accepted()[0]
            tampered = request["body"].replace(b'"type"', b'"typ\\u0065"', 1)
            try:
                Webhook(receiver.secret).verify(tampered, request["headers"])
            except WebhookVerificationError:
                return
            raise AssertionError("a tampered body verified")

        def deliveries_pending_across_a_restart_all_arrive_once():
            client, token, proc, endpoint = r.need("client", "token", "proc", "endpoint")
            receiver.failing = True
            made = [new_user(client, token, f"late{i}.{time.time_ns()}@example.com") for i in range(3)]
            before = len(receiver.all())
            wait_until("a failing attempt", lambda: len(receiver.all()) > before, DELIVERY_TIMEOUT)
            proc.stop()
            serve("roster-2")
            client, token = st["client"], client_login(st["client"])
            receiver.failing = False

            def created_ids():
                return {req["payload"]["data"]["target_id"] for req in receiver.accepted()
                        if req["payload"].get("type") == "user.created"}

            wait_until("the pending deliveries", lambda: set(made) <= created_ids(), DELIVERY_TIMEOUT)
            time.sleep(1.5)
            ids = [req["id"] for req in receiver.accepted()]
            check(len(ids) == len(set(ids)), "an event was accepted twice")
            wanted = [e for e in feed(client, token, endpoint["cursor"]) if e["type"].startswith("user.")]
            check([e["id"] for e in wanted] == ids, "the accepted events are not the feed's, in its order")
            log = all_deliveries(client, token, endpoint["id"])
            check(len(log) == len(wanted), f"{len(log)} log entries for {len(wanted)} events")
            check(len({entry["event_id"] for entry in log}) == len(log), "an event is logged twice")
            statuses = {entry["status"] for entry in log}
            check(statuses == {"WEBHOOK_DELIVERY_STATUS_DELIVERED"}, f"statuses: {statuses}")

        def client_login(client: Client) -> str:
            st["token"] = client.call(auth, "Login", st["login"])["access_token"]
            return st["token"]

        r.case("roster serves", roster_serves)
        r.case("the owner signs up, activates and logs in", owner_logs_in)
        r.case("grpcurl creates a webhook endpoint; its whsec_ secret comes back once", grpcurl_creates_the_endpoint)
        r.case("a deleted user's event reaches the receiver (after two failed attempts) and the feed, once each",
               a_deleted_users_event_reaches_the_receiver_and_the_feed_once_each)
        r.case("deliveries pending while roster restarts all arrive, in order, none twice as delivered",
               deliveries_pending_across_a_restart_all_arrive_once)
        r.case("standardwebhooks verifies every request roster sent", every_request_verifies_with_standardwebhooks)
        r.case("standardwebhooks refuses a tampered body", a_tampered_body_fails_verification)
    finally:
        for client in clients:
            client.close()
        for p in procs:
            p.stop()
        receiver.close()
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
