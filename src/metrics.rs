//! The instruments roster records, on the global OpenTelemetry meter: read by the Prometheus
//! registry behind `/metrics` (`ROSTER_METRICS_LISTEN`) and pushed over OTLP when an endpoint is
//! set. Names follow the OpenTelemetry conventions; Prometheus sees them with their unit and
//! `_total` (`rpc.server.call.duration` in s is `rpc_server_call_duration_seconds`).
//!
//! Instruments are made on first use, after `telemetry::init` installed the meter provider: made
//! earlier, they would stay bound to the no-op provider.

use std::{sync::OnceLock, time::Duration};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter, UpDownCounter},
};

use crate::api::observe::Method;

/// The meter of everything roster records.
pub fn meter() -> Meter {
    opentelemetry::global::meter("roster")
}

/// The call instruments of the RPC conventions.
pub struct RpcMetrics {
    calls: Counter<u64>,
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
}

/// Boundaries in seconds: a cached ValidateToken answers in tens of microseconds, a Login waits
/// for argon2 (tens of milliseconds), an import or a mass action takes seconds.
const CALL_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub fn rpc() -> &'static RpcMetrics {
    static RPC: OnceLock<RpcMetrics> = OnceLock::new();
    RPC.get_or_init(|| {
        let meter = meter();
        RpcMetrics {
            calls: meter
                .u64_counter("rpc.server.calls")
                .with_description("Calls answered, by service, method and gRPC code")
                .build(),
            duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Time from a call's headers to its last byte")
                .with_boundaries(CALL_BUCKETS.to_vec())
                .build(),
            active: meter
                .i64_up_down_counter("rpc.server.active_requests")
                .with_description("Calls in flight")
                .build(),
        }
    })
}

impl RpcMetrics {
    pub fn started(&self, method: Method) {
        self.active.add(1, &method_labels(method));
    }

    pub fn finished(&self, method: Method, code: &'static str, elapsed: Duration) {
        let [system, service, name] = method_labels(method);
        self.active
            .add(-1, &[system.clone(), service.clone(), name.clone()]);
        let labels = [
            system,
            service,
            name,
            KeyValue::new("rpc.grpc.status_code", code),
        ];
        self.calls.add(1, &labels);
        self.duration.record(elapsed.as_secs_f64(), &labels);
    }
}

fn method_labels(method: Method) -> [KeyValue; 3] {
    [
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", method.service),
        KeyValue::new("rpc.method", method.method),
    ]
}

/// The password hasher: hashes waiting for a thread, hashes on one, and the wait.
pub struct HashMetrics {
    queued: UpDownCounter<i64>,
    running: UpDownCounter<i64>,
    wait: Histogram<f64>,
}

pub fn hashes() -> &'static HashMetrics {
    static HASHES: OnceLock<HashMetrics> = OnceLock::new();
    HASHES.get_or_init(|| {
        let meter = meter();
        HashMetrics {
            queued: meter
                .i64_up_down_counter("roster.password_hash.queued")
                .with_description("Password hashes and checks waiting for a hashing thread")
                .build(),
            running: meter
                .i64_up_down_counter("roster.password_hash.running")
                .with_description("Password hashes and checks on a hashing thread")
                .build(),
            wait: meter
                .f64_histogram("roster.password_hash.wait")
                .with_unit("s")
                .with_description("Time a password hash waited for a hashing thread")
                .with_boundaries(CALL_BUCKETS.to_vec())
                .build(),
        }
    })
}

/// A hash waiting for a thread; [`QueuedHash::start`] when one takes it. Dropped unstarted (its
/// caller went away), it leaves the queue all the same.
pub struct QueuedHash {
    since: std::time::Instant,
}

impl QueuedHash {
    pub fn new() -> Self {
        hashes().queued.add(1, &[]);
        Self {
            since: std::time::Instant::now(),
        }
    }

    pub fn start(self) -> RunningHash {
        hashes()
            .wait
            .record(self.since.elapsed().as_secs_f64(), &[]);
        hashes().running.add(1, &[]);
        RunningHash(())
    }
}

impl Default for QueuedHash {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for QueuedHash {
    fn drop(&mut self) {
        hashes().queued.add(-1, &[]);
    }
}

/// A hash on a thread, until dropped.
pub struct RunningHash(());

impl Drop for RunningHash {
    fn drop(&mut self) {
        hashes().running.add(-1, &[]);
    }
}

/// The database: the wait for a connection of the pool (measured around BEGIN, so it includes
/// that round trip).
pub fn connection_wait() -> &'static Histogram<f64> {
    static WAIT: OnceLock<Histogram<f64>> = OnceLock::new();
    WAIT.get_or_init(|| {
        meter()
            .f64_histogram("db.client.connection.wait_time")
            .with_unit("s")
            .with_description("Time to obtain a pooled connection and begin a transaction")
            .with_boundaries(CALL_BUCKETS.to_vec())
            .build()
    })
}

/// How late notifications from other replicas arrive (PostgreSQL).
pub fn replication_lag() -> &'static Histogram<f64> {
    static LAG: OnceLock<Histogram<f64>> = OnceLock::new();
    LAG.get_or_init(|| {
        meter()
            .f64_histogram("roster.replication.notification.lag")
            .with_unit("s")
            .with_description("From a change's commit on another replica to its notification here")
            .with_boundaries(CALL_BUCKETS.to_vec())
            .build()
    })
}

/// The event feed and webhooks.
pub struct EventMetrics {
    appended: Counter<u64>,
    read: Counter<u64>,
    attempts: Counter<u64>,
    disabled: Counter<u64>,
}

pub fn events() -> &'static EventMetrics {
    static EVENTS: OnceLock<EventMetrics> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let meter = meter();
        EventMetrics {
            appended: meter
                .u64_counter("roster.events.appended")
                .with_description("Events written to the feed")
                .build(),
            read: meter
                .u64_counter("roster.events.read")
                .with_description("Events handed to callers of ListEvents")
                .build(),
            attempts: meter
                .u64_counter("roster.webhook.attempts")
                .with_description("Webhook delivery attempts, by outcome (delivered, failed)")
                .build(),
            disabled: meter
                .u64_counter("roster.webhook.endpoints_disabled")
                .with_description("Webhook endpoints disabled after failing too long")
                .build(),
        }
    })
}

impl EventMetrics {
    pub fn appended(&self, count: usize) {
        self.appended.add(count as u64, &[]);
    }

    pub fn read(&self, count: usize) {
        self.read.add(count as u64, &[]);
    }

    pub fn attempt(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.attempts.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    pub fn endpoint_disabled(&self) {
        self.disabled.add(1, &[]);
    }
}

/// The gauges read from roster's state when a reader collects: the connection pool, the caches,
/// and the mail outbox (whose figures a background task refreshes, so that a scrape never waits
/// for the database). Held for as long as the server runs.
pub struct StateGauges {
    _gauges: Vec<opentelemetry::metrics::ObservableGauge<u64>>,
    _outbox_age: opentelemetry::metrics::ObservableGauge<f64>,
}

/// How often the outbox figures are read.
const OUTBOX_EVERY: Duration = Duration::from_secs(5);

pub fn observe(
    app: &crate::domain::App,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (StateGauges, tokio::task::JoinHandle<()>) {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let meter = meter();
    let store = app.store.clone();
    let max = u64::from(store.max_connections());
    let connections = meter
        .u64_observable_gauge("db.client.connections")
        .with_description("Pooled database connections, by state (idle, used)")
        .with_callback(move |observer| {
            let db = store.db();
            let (size, idle) = if store.is_postgres() {
                let pool = db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            } else {
                let pool = db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            };
            let (size, idle) = (u64::from(size), idle as u64);
            observer.observe(idle, &[KeyValue::new("state", "idle")]);
            observer.observe(size.saturating_sub(idle), &[KeyValue::new("state", "used")]);
        })
        .build();
    let connection_max = meter
        .u64_observable_gauge("db.client.connection.max")
        .with_description("The most connections the pool opens")
        .with_callback(move |observer| observer.observe(max, &[]))
        .build();
    let revocations = app.tokens.revocations().clone();
    let revocation_entries = meter
        .u64_observable_gauge("roster.revocations.entries")
        .with_description("Revocations held in memory, by kind (sessions, users, grants)")
        .with_callback(move |observer| {
            for (kind, size) in revocations.sizes() {
                observer.observe(size as u64, &[KeyValue::new("kind", kind)]);
            }
        })
        .build();
    let cache = app.cache.clone();
    let cache_entries = meter
        .u64_observable_gauge("roster.read_cache.entries")
        .with_description("Reads held in the cache, by kind (users, accounts)")
        .with_callback(move |observer| {
            for (kind, size) in cache.sizes() {
                observer.observe(size as u64, &[KeyValue::new("kind", kind)]);
            }
        })
        .build();

    // The outbox, read every few seconds; u64::MAX is "no oldest message".
    let backlog = Arc::new(AtomicU64::new(0));
    let oldest_ms = Arc::new(AtomicU64::new(u64::MAX));
    let outbox_backlog = {
        let backlog = backlog.clone();
        meter
            .u64_observable_gauge("roster.mail_outbox.backlog")
            .with_description("Mails waiting to be sent")
            .with_callback(move |observer| observer.observe(backlog.load(Ordering::Relaxed), &[]))
            .build()
    };
    let outbox_age = {
        let oldest_ms = oldest_ms.clone();
        let clock = app.clock.clone();
        meter
            .f64_observable_gauge("roster.mail_outbox.oldest_age")
            .with_unit("s")
            .with_description("Age of the oldest mail waiting to be sent (0 when none waits)")
            .with_callback(move |observer| {
                let oldest = oldest_ms.load(Ordering::Relaxed);
                let age = if oldest == u64::MAX {
                    0.0
                } else {
                    let now = clock.now().timestamp_millis().max(0) as u64;
                    now.saturating_sub(oldest) as f64 / 1000.0
                };
                observer.observe(age, &[]);
            })
            .build()
    };
    let store = app.store.clone();
    let mut stop = stop;
    let task = tokio::spawn(async move {
        loop {
            match crate::store::outbox::backlog(store.db()).await {
                Ok((count, oldest)) => {
                    backlog.store(count, Ordering::Relaxed);
                    let oldest = oldest.map_or(u64::MAX, |at| at.timestamp_millis().max(0) as u64);
                    oldest_ms.store(oldest, Ordering::Relaxed);
                }
                Err(err) => tracing::debug!(error = %err, "outbox figures not read"),
            }
            tokio::select! {
                _ = tokio::time::sleep(OUTBOX_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    });
    (
        StateGauges {
            _gauges: vec![
                connections,
                connection_max,
                revocation_entries,
                cache_entries,
                outbox_backlog,
            ],
            _outbox_age: outbox_age,
        },
        task,
    )
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until `stop`; other paths are
/// 404. Plain HTTP/1.1: Prometheus scrapes that.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: &'static prometheus::Registry,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode, body::Bytes, service::service_fn};

    let answer = move |request: hyper::Request<hyper::body::Incoming>| async move {
        let response = if request.uri().path() != "/metrics" {
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
        } else if request.method() != hyper::Method::GET && request.method() != hyper::Method::HEAD
        {
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header("allow", "GET, HEAD")
                .body(Full::new(Bytes::new()))
        } else {
            let mut text = Vec::new();
            let encoder = prometheus::TextEncoder::new();
            match prometheus::Encoder::encode(&encoder, &registry.gather(), &mut text) {
                Ok(()) => Response::builder()
                    .header("content-type", prometheus::TEXT_FORMAT)
                    .body(Full::new(Bytes::from(text))),
                Err(err) => Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body(Full::new(Bytes::from(format!("{err}\n")))),
            }
        };
        Ok::<_, std::convert::Infallible>(response.expect("a valid response"))
    };
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics listener");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service_fn(answer))
                .await;
        });
    }
}
