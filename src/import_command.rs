//! `roster import FILE.csv`: streams a CSV file to a running server's ImportUsers, with a
//! progress bar, and prints the report.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;

use crate::api::pb::{self, user_service_client::UserServiceClient};

/// Arguments of `roster import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The CSV file (header first; see the README for the columns).
    pub file: PathBuf,
    /// The server.
    #[arg(long, env = "ROSTER_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// An access token of the account's owner or an admin.
    #[arg(long, env = "ROSTER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Check every row and report, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Create the good rows even if some rows are bad.
    #[arg(long)]
    pub skip_invalid_rows: bool,
    /// Do not queue invitation and activation emails.
    #[arg(long)]
    pub suppress_emails: bool,
    /// Bytes per streamed message.
    #[arg(long, default_value = "1048576")]
    pub chunk_bytes: usize,
}

/// Runs the import and prints its report.
pub fn run(args: &ImportArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roster import: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(import(args)) {
        Ok(report) => {
            let verb = if report.dry_run {
                "would create"
            } else {
                "created"
            };
            let created = if report.dry_run {
                report.rows - report.invalid
            } else {
                report.created
            };
            println!(
                "{} rows read, {verb} {created} users, {} invalid rows",
                report.rows, report.invalid
            );
            for error in &report.errors {
                let column = if error.column.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", error.column)
                };
                println!("  line {}{column}: {}", error.line, error.message);
            }
            if report.invalid > 0 && !args.skip_invalid_rows {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("roster import: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn import(args: &ImportArgs) -> anyhow::Result<pb::ImportUsersResponse> {
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().await?.len();
    let progress = ProgressBar::new(size);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")?
            .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let mut chunks = Vec::new();
    let mut first = true;
    loop {
        let mut buffer = vec![0u8; args.chunk_bytes.max(1024)];
        let read = file.read(&mut buffer).await?;
        if read == 0 && !first {
            break;
        }
        buffer.truncate(read);
        chunks.push(pb::ImportUsersRequest {
            dry_run: args.dry_run,
            skip_invalid_rows: args.skip_invalid_rows,
            suppress_emails: args.suppress_emails,
            csv_chunk: buffer,
        });
        first = false;
        if read == 0 {
            break;
        }
    }
    let bar = progress.clone();
    let stream = tokio_stream::iter(
        chunks
            .into_iter()
            .inspect(move |chunk| bar.inc(chunk.csv_chunk.len() as u64)),
    );
    let channel = tonic::transport::Endpoint::from_shared(args.addr.clone())?
        .connect()
        .await?;
    let mut client = UserServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let mut request = tonic::Request::new(stream);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", args.token.trim()).parse()?,
    );
    progress.set_message("sending");
    let response = client.import_users(request).await;
    progress.finish_with_message(if response.is_ok() { "done" } else { "failed" });
    Ok(response
        .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
        .into_inner())
}
