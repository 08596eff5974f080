//! What metrics and tracing cost: a second server on the same database with `/metrics` on (and
//! scraped every second, as Prometheus would), traces and metrics exported over OTLP to a
//! collector in this process; ValidateToken is driven at both servers in alternating rounds.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use tonic::{Request, Response, Status};

/// What the collector and the scraper received.
#[derive(Debug, Default)]
pub struct Received {
    pub spans: AtomicU64,
    pub metric_exports: AtomicU64,
    pub scrapes: AtomicU64,
    pub scraped_bytes: AtomicU64,
}

#[derive(Clone)]
struct Collector(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.metric_exports.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP/gRPC collector on a free port, and a scraper of `metrics` every second, until the
/// returned task is aborted.
pub async fn collect(
    metrics: SocketAddr,
) -> anyhow::Result<(SocketAddr, Arc<Received>, Vec<tokio::task::JoinHandle<()>>)> {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the OTLP collector")?;
    let addr = listener.local_addr()?;
    let collector = Collector(received.clone());
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    let scraped = received.clone();
    let scraper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(bytes) = scrape(metrics).await {
                scraped.scrapes.fetch_add(1, Ordering::Relaxed);
                scraped
                    .scraped_bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
            }
        }
    });
    Ok((addr, received, vec![server, scraper]))
}

/// One `GET /metrics` over HTTP/1.1; the body's size.
async fn scrape(addr: SocketAddr) -> anyhow::Result<usize> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: roster\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    anyhow::ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "/metrics did not answer 200"
    );
    let body = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map_or(0, |at| answer.len() - at - 4);
    Ok(body)
}
