//! The `roster` command: serve (default), migrate, descriptor, import. The load generator is a
//! program of its own (`roster-bench`, in `bench/`).

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use roster::{
    config::{Settings, SettingsArgs},
    model::SystemClock,
    server, telemetry,
};

/// jemalloc: see the note beside the dependency in Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread hands freed memory back to the system after 5 s even
/// while the server is idle (without it, purging waits for the next allocations, so the memory
/// of a mass action stayed resident), straight away rather than through MADV_FREE, whose pages
/// count as resident until the kernel wants them.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: MallocConf = MallocConf(
    c"background_thread:true,max_background_threads:1,dirty_decay_ms:5000,muzzy_decay_ms:0"
        .as_ptr(),
);

/// jemalloc's `const char *malloc_conf` (jemalloc's own is a weak, empty default).
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a static string that nothing writes.
unsafe impl Sync for MallocConf {}

#[derive(Parser)]
#[command(
    name = "roster",
    version,
    about = "Multi-tenant user-management service over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Write the encoded FileDescriptorSet (with google.api.http options) for gateways.
    Descriptor {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create users from a CSV file through a running server's ImportUsers.
    Import(roster::import_command::ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Descriptor { out }) = &cli.command {
        return match std::fs::write(out, roster::api::pb::FILE_DESCRIPTOR_SET) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("roster: cannot write {}: {err}", out.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Import(args)) = &cli.command {
        return roster::import_command::run(args);
    }
    let settings = match Settings::try_from(cli.settings) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("roster: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roster: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let _telemetry = telemetry::init(
            &settings.log,
            settings.log_format,
            settings.metrics_listen.is_some(),
        )?;
        match cli.command {
            Some(Command::Migrate) => {
                let settings = Settings {
                    migrate: true,
                    ..settings
                };
                server::open_store(&settings).await?.close().await;
                tracing::info!("migrations applied");
                Ok(())
            }
            _ => {
                let listener = tokio::net::TcpListener::bind(settings.listen).await?;
                server::serve(settings, Arc::new(SystemClock), listener, shutdown_signal()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("roster: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn settings_are_flags_of_serve_as_well_as_before_it() {
        for args in [
            vec!["roster", "serve", "--listen", "127.0.0.1:7000"],
            vec!["roster", "--listen", "127.0.0.1:7000", "serve"],
            vec!["roster", "migrate", "--database-url", "sqlite://x.db"],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|err| panic!("{args:?}: {err}"));
            assert!(matches!(
                cli.command,
                Some(Command::Serve | Command::Migrate)
            ));
            if args.contains(&"--listen") {
                assert_eq!(cli.settings.listen, "127.0.0.1:7000");
            }
        }
    }
}
