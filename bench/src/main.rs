//! `roster-bench`: drives load at a roster server (started here unless `--addr`) and prints
//! throughput, latency, memory and targets, each against a baseline measured in the same run.
//! A program of its own, so that the service binary carries no load generator.

mod enumeration;
mod observed;
mod run;
mod scale;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, as the server: the client's allocations should cost what the server's do.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "roster-bench",
    version,
    about = "Drive load at a roster server; print throughput, latency, memory and targets"
)]
struct Cli {
    #[command(flatten)]
    args: run::BenchArgs,
}

fn main() -> ExitCode {
    run::run(&Cli::parse().args)
}
