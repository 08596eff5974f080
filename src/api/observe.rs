//! What every call leaves behind for the people who run roster: a server span after the
//! OpenTelemetry RPC conventions (child of the caller's `traceparent`), a log line, and the call
//! metrics. A call ends when its response body ends: the grpc-status is in the trailers (or in
//! the headers of a trailers-only answer), and a body dropped before its end was CANCELLED.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll, ready},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tracing::{Instrument as _, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics;

/// The method of a call, as the conventions name it; a path roster does not serve is `_OTHER`,
/// so that no caller can grow the metrics' label sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    /// `roster.v1.AuthService/Login`
    pub full: &'static str,
    /// `roster.v1.AuthService`
    pub service: &'static str,
    /// `Login`
    pub method: &'static str,
}

const OTHER: Method = Method {
    full: "_OTHER",
    service: "_OTHER",
    method: "_OTHER",
};

impl Method {
    /// The served method of a request path (`/roster.v1.AuthService/Login`).
    pub fn of_path(path: &str) -> Method {
        served_methods()
            .get(path.strip_prefix('/').unwrap_or(path))
            .copied()
            .unwrap_or(OTHER)
    }
}

/// Every method roster serves, read once from the descriptor sets it serves reflection from.
fn served_methods() -> &'static HashMap<&'static str, Method> {
    static METHODS: OnceLock<HashMap<&'static str, Method>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut methods = HashMap::new();
        for encoded in [
            super::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(encoded)
                .expect("the built-in descriptor sets decode");
            for file in set.file {
                for service in &file.service {
                    let service_name: &'static str =
                        format!("{}.{}", file.package(), service.name()).leak();
                    for method in &service.method {
                        let full: &'static str = format!("{service_name}/{}", method.name()).leak();
                        let method: &'static str = method.name().to_owned().leak();
                        methods.insert(
                            full,
                            Method {
                                full,
                                service: service_name,
                                method,
                            },
                        );
                    }
                }
            }
        }
        methods
    })
}

/// The layer: outermost but for the concurrency limit, so that its span holds all of a call.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcLayer;

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for RpcService<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
{
    type Response = http::Response<RpcBody<ResponseBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let call = Call::start(&request);
        let future = call.span.in_scope(|| self.inner.call(request));
        RpcFuture {
            future: future.instrument(call.span.clone()),
            call: Some(call),
        }
    }
}

/// One call under way: its span, its start, its method.
struct Call {
    span: Span,
    started: Instant,
    method: Method,
}

/// The gRPC codes, by number, as the conventions and the logs spell them.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: u16 = 1;
const UNKNOWN: u16 = 2;

/// The code a grpc-status header or trailer carries, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(if usize::from(code) < CODE_NAMES.len() {
        code
    } else {
        UNKNOWN
    })
}

impl Call {
    fn start<B>(request: &http::Request<B>) -> Call {
        let method = Method::of_path(request.uri().path());
        let span = tracing::info_span!(
            "rpc",
            otel.name = method.full,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = method.service,
            rpc.method = method.method,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
            tenant_id = Empty,
            user_id = Empty,
        );
        // W3C traceparent/tracestate from the metadata make this span a child of the caller's.
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
        });
        // Refused only when no OpenTelemetry layer is installed: nothing to link then.
        let _ = span.set_parent(parent);
        metrics::rpc().started(method);
        Call {
            span,
            started: Instant::now(),
            method,
        }
    }

    fn finish(self, code: u16) {
        let elapsed = self.started.elapsed();
        let name = CODE_NAMES[usize::from(code)];
        self.span.record("rpc.grpc.status_code", i64::from(code));
        if code != 0 {
            // The conventions leave refusals UNSET on a server; roster marks every non-OK answer,
            // so that "failed calls" means what it says on a dashboard.
            self.span.record("otel.status_code", "ERROR");
            self.span.record("otel.status_description", name);
        }
        self.span.in_scope(|| {
            tracing::info!(
                grpc_status = code,
                grpc_code = name,
                latency_us = elapsed.as_micros() as u64,
                "call finished"
            )
        });
        metrics::rpc().finished(self.method, name, elapsed);
    }
}

pin_project_lite::pin_project! {
    pub struct RpcFuture<F> {
        #[pin]
        future: tracing::instrument::Instrumented<F>,
        call: Option<Call>,
    }

    impl<F> PinnedDrop for RpcFuture<F> {
        // The caller went away before the answer.
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(CANCELLED);
            }
        }
    }
}

impl<F, ResponseBody, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, E>>,
{
    type Output = Result<http::Response<RpcBody<ResponseBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let call = this.call.take().expect("polled after completion");
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only answer (every refusal) has its status in the headers.
                let call = match grpc_status(response.headers()) {
                    Some(code) => {
                        call.finish(code);
                        None
                    }
                    None => Some(call),
                };
                Ok(response.map(|inner| RpcBody { inner, call }))
            }
            Err(error) => {
                call.finish(UNKNOWN);
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// The response body, which ends the call when it ends.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for RpcBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(CANCELLED);
            }
        }
    }
}

impl<B: Body> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(UNKNOWN)),
            Some(Err(_)) => Some(UNKNOWN),
            // The end without trailers: a body that is not gRPC's.
            None => Some(UNKNOWN),
        };
        if let Some(code) = ended
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_paths_name_their_service_and_method_and_others_are_other() {
        assert_eq!(
            Method::of_path("/roster.v1.AuthService/Login"),
            Method {
                full: "roster.v1.AuthService/Login",
                service: "roster.v1.AuthService",
                method: "Login",
            }
        );
        assert_eq!(
            Method::of_path("/grpc.health.v1.Health/Check").service,
            "grpc.health.v1.Health"
        );
        assert_eq!(Method::of_path("/roster.v1.AuthService/Nope"), OTHER);
        assert_eq!(Method::of_path("/"), OTHER);
    }

    #[test]
    fn a_status_beyond_the_known_codes_is_unknown() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(grpc_status(&headers), Some(16));
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(grpc_status(&headers), Some(UNKNOWN));
    }
}
