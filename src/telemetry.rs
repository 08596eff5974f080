//! Logs, traces and metrics.
//!
//! - Logs: a fmt subscriber, text or JSON; JSON lines carry the `trace_id` and `span_id` of the
//!   span they were written in, when traces are exported.
//! - Traces: exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or `OTEL_TRACES_EXPORTER=otlp`), unless
//!   `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The SDK reads the other standard
//!   variables itself: headers, timeout, sampler, batch sizes.
//! - Metrics: a Prometheus registry when `ROSTER_METRICS_LISTEN` is set, and OTLP under the same
//!   rules as traces (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, `OTEL_METRICS_EXPORTER`).
//! - The resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, with `service.name`
//!   "roster" when neither names it.
//! - Incoming W3C `traceparent`/`tracestate` and `baggage` are read by `api::observe`.

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::SdkTracerProvider,
};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Flushes exported spans and metrics when dropped.
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

static REGISTRY: std::sync::OnceLock<prometheus::Registry> = std::sync::OnceLock::new();

/// The registry `/metrics` reads, once `init` made one.
pub fn registry() -> Option<&'static prometheus::Registry> {
    REGISTRY.get()
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("opentelemetry traces shutdown: {err}");
        }
        if let Some(provider) = self.meter.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("opentelemetry metrics shutdown: {err}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// Whether a signal goes out over OTLP: the OpenTelemetry variables decide.
fn exports(signal: &str) -> bool {
    if env("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return false;
    }
    match env(&format!("OTEL_{signal}_EXPORTER")) {
        Some(exporter) if exporter.eq_ignore_ascii_case("none") => false,
        Some(exporter) if exporter.eq_ignore_ascii_case("otlp") => true,
        _ => {
            env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some()
        }
    }
}

/// The resource of every span and metric: the environment's, named "roster" unless it names
/// itself.
fn resource() -> Resource {
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        });
    let builder = Resource::builder();
    let builder = if named {
        builder
    } else {
        builder.with_service_name("roster")
    };
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Installs the global subscriber, propagator and meter provider; `metrics` asks for the
/// Prometheus registry.
pub fn init(filter: &str, format: LogFormat, metrics: bool) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry::propagation::TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]),
    );
    let resource = resource();

    let tracer = if exports("TRACES") {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.clone())
                .build(),
        )
    } else {
        None
    };

    let registry = metrics.then(|| REGISTRY.get_or_init(prometheus::Registry::new));
    let mut meter = None;
    if registry.is_some() || exports("METRICS") {
        let mut builder = SdkMeterProvider::builder().with_resource(resource);
        if let Some(registry) = &registry {
            builder = builder.with_reader(
                opentelemetry_prometheus::exporter()
                    .with_registry((*registry).clone())
                    .build()?,
            );
        }
        if exports("METRICS") {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()?;
            builder = builder.with_reader(PeriodicReader::builder(exporter).build());
        }
        let provider = builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        meter = Some(provider);
    }

    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_filter(EnvFilter::try_new(filter)?)
            .boxed(),
        LogFormat::Json => {
            let mut layer = json_subscriber::fmt::layer().flatten_event(true);
            layer
                .inner_layer_mut()
                .add_multiple_dynamic_fields(|event, context, writer| {
                    // The ids of the span the line was written in, as the trace shows them.
                    let Some(span) = context.event_span(event) else {
                        return;
                    };
                    let Some(otel) = tracing::dispatcher::get_default(|dispatch| {
                        tracing_opentelemetry::get_otel_context(&span.id(), dispatch)
                    }) else {
                        return;
                    };
                    use opentelemetry::trace::TraceContextExt as _;
                    let span = otel.span();
                    let ids = span.span_context();
                    if ids.is_valid() {
                        let _ = writer.write_field("trace_id", ids.trace_id().to_string());
                        let _ = writer.write_field("span_id", ids.span_id().to_string());
                    }
                });
            layer.with_filter(EnvFilter::try_new(filter)?).boxed()
        }
    };
    // Spans go to the collector whatever the log filter: roster's own and the database's. Only
    // warnings and errors ride along as span events (every call's "call finished" line is in the
    // logs and in the span's attributes already), and no source location, thread or idle-time
    // attributes: each of them cost every call its share (see the bench's observed-cost line).
    let otel = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("roster"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                if metadata.is_span() {
                    *metadata.level() <= tracing::Level::INFO
                } else {
                    *metadata.level() <= tracing::Level::WARN
                }
            }))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { tracer, meter })
}
