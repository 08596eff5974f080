#!/usr/bin/env python3
"""End-to-end test of traces, logs and metrics, seen from the tools operators use.

    pip install -r tests/e2e/requirements.txt   # and Debian `prometheus` (prometheus, promtool)
    ROSTER_BIN=target/debug/roster python tests/e2e/test_observability.py
    # on PostgreSQL: E2E_DATABASE_URL=postgres://... (tests/run.sh does it)

The real `roster` binary exports over OTLP/gRPC to a collector in this process (the official
OpenTelemetry protos, `opentelemetry-proto`), writes JSON logs, and serves /metrics, which a real
Prometheus scrapes and `promtool check metrics` lints. Cases: a call with a W3C `traceparent`
leaves a SERVER span named after its method, a child of the caller's span, with the rpc.*
attributes and OTEL_SERVICE_NAME in its resource; database work shows as its child spans; a
refused call has status ERROR and its gRPC code; the JSON log line of a call carries its trace and
span ids; /metrics passes promtool and holds the call, hash, pool, outbox and cache metrics;
Prometheus scrapes roster and answers a query on the calls; metrics arrive over OTLP as well.
One PASS/FAIL line per case, then `N passed, M failed`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_outside_clients import (  # noqa: E402 - the shared helpers live next to this file
    CALL_TIMEOUT,
    PASSWORD,
    Proc,
    Runner,
    check,
    free_port,
    sign_up_and_activate,
    wait_serving,
    wait_until,
)
from test_totp_pyotp import Client, refused  # noqa: E402

EXPORT_TIMEOUT = 20.0
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
CLIENT_KIND = 3
STATUS_ERROR = 2


class Collector:
    """An OTLP/gRPC receiver: keeps every span and metric it is sent."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.lock = threading.Lock()
        self.spans: list[tuple[dict, object]] = []  # (resource attributes, span)
        self.metrics: list[str] = []
        collector = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 - the proto's name
                with collector.lock:
                    for resource_spans in request.resource_spans:
                        resource = attributes(resource_spans.resource.attributes)
                        for scope in resource_spans.scope_spans:
                            collector.spans += [(resource, span) for span in scope.spans]
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802
                with collector.lock:
                    for resource_metrics in request.resource_metrics:
                        for scope in resource_metrics.scope_metrics:
                            collector.metrics += [metric.name for metric in scope.metrics]
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def trace(self, trace_id: bytes) -> list[tuple[dict, object]]:
        with self.lock:
            return [(resource, span) for resource, span in self.spans if span.trace_id == trace_id]

    def close(self) -> None:
        self.server.stop(0)


def attributes(pairs) -> dict:
    found = {}
    for pair in pairs:
        value = pair.value
        kind = value.WhichOneof("value")
        found[pair.key] = getattr(value, kind) if kind else None
    return found


class TracedClient(Client):
    """Client.call with extra metadata (the caller's traceparent)."""

    def call_with(self, service: str, method: str, fields: dict, metadata: list[tuple[str, str]]):
        from google.protobuf import json_format, message_factory

        m = self.pool.FindServiceByName(service).FindMethodByName(method)
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        reply = stub(req_cls(**fields), timeout=CALL_TIMEOUT, metadata=metadata)
        return json_format.MessageToDict(reply, preserving_proto_field_name=True)


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/bin", "/usr/sbin", "/usr/local/bin"):
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    return None


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
        return response.status, response.headers.get("content-type", ""), response.read().decode()


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
    tmp = Path(tempfile.mkdtemp(prefix="roster-observability-"))
    database_url = os.environ.get("E2E_DATABASE_URL") or f"sqlite://{tmp / 'roster.db'}"
    mail_dir = tmp / "mail"
    procs: list[Proc] = []
    collector = Collector()
    client: TracedClient | None = None
    auth = "roster.v1.AuthService"
    service_name = f"roster-e2e-{secrets.token_hex(3)}"

    def new_trace() -> tuple[bytes, bytes, list[tuple[str, str]]]:
        trace_id, parent_id = secrets.token_bytes(16), secrets.token_bytes(8)
        traceparent = f"00-{trace_id.hex()}-{parent_id.hex()}-01"
        return trace_id, parent_id, [("traceparent", traceparent), ("tracestate", "e2e=1")]

    def server_span(trace_id: bytes, method: str):
        def found():
            for resource, span in collector.trace(trace_id):
                if span.kind == SERVER_KIND and span.name == method:
                    return resource, span
            return None

        return wait_until(f"the server span of {method} in trace {trace_id.hex()}", found, EXPORT_TIMEOUT)

    try:
        def roster_serves():
            addr = f"127.0.0.1:{free_port()}"
            metrics_addr = f"127.0.0.1:{free_port()}"
            env = dict(os.environ)
            env.update(
                ROSTER_LISTEN=addr,
                ROSTER_METRICS_LISTEN=metrics_addr,
                ROSTER_DATABASE_URL=database_url,
                ROSTER_MAIL_URL=f"file://{mail_dir}",
                ROSTER_LOG_FORMAT="json",
                OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
                OTEL_SERVICE_NAME=service_name,
                OTEL_RESOURCE_ATTRIBUTES="deployment.environment=e2e",
                OTEL_BSP_SCHEDULE_DELAY="100",
                OTEL_METRIC_EXPORT_INTERVAL="1000",
            )
            proc = Proc("roster", [roster_bin, "serve"], tmp / "roster.log", env)
            procs.append(proc)
            wait_serving(proc, addr)
            st.update(proc=proc, addr=addr, metrics_addr=metrics_addr)

        def owner_signs_up():
            nonlocal client
            (addr,) = r.need("addr")
            client = TracedClient(addr)
            created, st["login"] = sign_up_and_activate(client, mail_dir)
            st["tenant_id"] = created["tenant_id"]

        def a_traced_login_is_a_child_server_span():
            (login,) = r.need("login")
            trace_id, parent_id, metadata = new_trace()
            reply = client.call_with(auth, "Login", login, metadata)
            st["token"] = reply["access_token"]
            resource, span = server_span(trace_id, "roster.v1.AuthService/Login")
            check(span.parent_span_id == parent_id,
                  f"parent {span.parent_span_id.hex()}, the caller's span is {parent_id.hex()}")
            attrs = attributes(span.attributes)
            wanted = {"rpc.system": "grpc", "rpc.service": "roster.v1.AuthService", "rpc.method": "Login",
                      "rpc.grpc.status_code": 0, "tenant_id": st["tenant_id"]}
            for key, value in wanted.items():
                check(attrs.get(key) == value, f"{key} = {attrs.get(key)!r}, wanted {value!r}: {attrs}")
            check(span.status.code != STATUS_ERROR, f"status {span.status}")
            check(resource.get("service.name") == service_name, f"resource {resource}")
            check(resource.get("deployment.environment") == "e2e", f"resource {resource}")
            st["login_span"] = span

        def database_work_is_child_spans():
            (span,) = r.need("login_span")

            def children():
                found = [s for _, s in collector.trace(span.trace_id)
                         if s.parent_span_id == span.span_id and s.kind == CLIENT_KIND]
                return found or None

            found = wait_until("the database spans under Login", children, EXPORT_TIMEOUT)
            systems = {attributes(s.attributes).get("db.system") for s in found}
            wanted = "postgresql" if database_url.startswith("postgres") else "sqlite"
            check(systems == {wanted}, f"db.system of the child spans: {systems}")
            # Each starts while the call runs (work the call hands to a task of its own, such as
            # a commit after the answer, may end after it).
            for child in found:
                check(span.start_time_unix_nano <= child.start_time_unix_nano <= span.end_time_unix_nano,
                      f"{child.name} did not start during the server span")

        def a_refused_call_has_status_error_and_its_code():
            (login,) = r.need("login")
            trace_id, _, metadata = new_trace()
            refused(lambda: client.call_with(auth, "Login", {**login, "password": "wrong" + PASSWORD}, metadata),
                    "UNAUTHENTICATED")
            _, span = server_span(trace_id, "roster.v1.AuthService/Login")
            attrs = attributes(span.attributes)
            check(attrs.get("rpc.grpc.status_code") == 16, f"code {attrs.get('rpc.grpc.status_code')}")
            check(span.status.code == STATUS_ERROR, f"status {span.status}")

        def the_json_log_line_of_a_call_carries_its_trace():
            proc, span = r.need("proc", "login_span")
            trace_hex, span_hex = span.trace_id.hex(), span.span_id.hex()

            def line():
                for text in proc.log.read_text(errors="replace").splitlines():
                    try:
                        entry = json.loads(text)
                    except ValueError:
                        continue
                    if entry.get("message") == "call finished" and entry.get("trace_id") == trace_hex:
                        return entry
                return None

            entry = wait_until("the log line of the traced Login", line, EXPORT_TIMEOUT)
            check(entry.get("span_id") == span_hex, f"span_id {entry.get('span_id')}, the span is {span_hex}")
            check(entry.get("grpc_code") == "OK", f"log line {entry}")

        def metrics_pass_promtool_and_hold_the_instruments():
            (metrics_addr,) = r.need("metrics_addr")
            status, content_type, text = http_get(f"http://{metrics_addr}/metrics")
            check(status == 200 and content_type.startswith("text/plain"), f"{status} {content_type}")
            promtool = find_tool("promtool")
            check(promtool is not None, "promtool is not installed (Debian package prometheus)")
            out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                                 timeout=30, check=False)
            check(out.returncode == 0, f"promtool check metrics: {out.stdout}{out.stderr}")
            for name in [
                'rpc_server_calls_total{rpc_grpc_status_code="OK",rpc_method="Login"',
                'rpc_server_calls_total{rpc_grpc_status_code="UNAUTHENTICATED",rpc_method="Login"',
                'rpc_server_call_duration_seconds_bucket{rpc_grpc_status_code="OK",rpc_method="Login"',
                "rpc_server_active_requests{",
                "roster_password_hash_wait_seconds_count",
                "roster_password_hash_queued",
                "roster_password_hash_running",
                'db_client_connections{state="idle"',
                "db_client_connection_wait_time_seconds_count",
                "roster_mail_outbox_backlog",
                "roster_mail_outbox_oldest_age_seconds",
                'roster_revocations_entries{kind="sessions"',
                'roster_read_cache_entries{kind="users"',
                "roster_events_appended_total",
            ]:
                check(name in text, f"/metrics has no {name}")
            status, _, _ = (404, "", "")
            try:
                http_get(f"http://{metrics_addr}/nothing")
            except urllib.error.HTTPError as e:
                status = e.code
            check(status == 404, f"/nothing answered {status}")

        def prometheus_scrapes_roster():
            (metrics_addr,) = r.need("metrics_addr")
            binary = find_tool("prometheus")
            check(binary is not None, "prometheus is not installed (Debian package prometheus)")
            port = free_port()
            config = tmp / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n"
                "scrape_configs:\n  - job_name: roster\n"
                f"    static_configs:\n      - targets: ['{metrics_addr}']\n"
            )
            proc = Proc("prometheus", [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{port}"], tmp / "prometheus.log")
            procs.append(proc)
            query = urllib.parse.quote('sum by (rpc_method) (rpc_server_calls_total{rpc_service="roster.v1.AuthService"})')

            def answered():
                _, _, text = http_get(f"http://127.0.0.1:{port}/api/v1/query?query={query}")
                result = json.loads(text)["data"]["result"]
                methods = {series["metric"].get("rpc_method"): float(series["value"][1]) for series in result}
                return methods if methods.get("Login", 0) >= 2 else None

            methods = wait_until("Prometheus to scrape roster's calls", answered, 60.0, proc, interval=1.0)
            check({"SignUp", "ActivateAccount", "Login"} <= set(methods), f"Prometheus sees {methods}")
            _, _, text = http_get(f"http://127.0.0.1:{port}/api/v1/targets")
            health = [t["health"] for t in json.loads(text)["data"]["activeTargets"]]
            check(health == ["up"], f"targets: {health}")

        def metrics_arrive_over_otlp():
            def names():
                with collector.lock:
                    found = set(collector.metrics)
                return found if "rpc.server.call.duration" in found else None

            found = wait_until("metrics at the OTLP collector", names, EXPORT_TIMEOUT)
            for name in ["rpc.server.calls", "rpc.server.active_requests", "db.client.connections"]:
                check(name in found, f"OTLP metrics lack {name}: {sorted(found)}")

        r.case("roster serves with OTLP, JSON logs and /metrics", roster_serves)
        r.case("the owner signs up and activates", owner_signs_up)
        r.case("a Login with traceparent is a SERVER span, child of the caller's, with rpc.* attributes",
               a_traced_login_is_a_child_server_span)
        r.case("the Login's database work is its child spans", database_work_is_child_spans)
        r.case("a refused Login's span has status ERROR and rpc.grpc.status_code 16",
               a_refused_call_has_status_error_and_its_code)
        r.case("the JSON log line of the call carries its trace_id and span_id",
               the_json_log_line_of_a_call_carries_its_trace)
        r.case("/metrics passes promtool check metrics and holds every instrument",
               metrics_pass_promtool_and_hold_the_instruments)
        r.case("a real Prometheus scrapes roster and answers a query on its calls", prometheus_scrapes_roster)
        r.case("metrics arrive over OTLP too", metrics_arrive_over_otlp)
    finally:
        if client is not None:
            client.close()
        for p in procs:
            p.stop()
        collector.close()
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
