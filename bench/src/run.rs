//! The load generator's run: the server, the fixture, the phases and the report.
//!
//! Starts the server as a child process (or targets a running one with `--addr`), measures start
//! to SERVING on a new and on an existing database, signs up and activates an account through the
//! real API, then drives `--concurrency` calls at once for each RPC and prints calls/s, p50, p99,
//! the server's CPU per call and its resident memory. Throughput is judged against baselines
//! measured in the same run, because these machines are noisy and the client shares the cores
//! with the server: `grpc.health.v1.Health/Check` for the cheap RPCs, and a raw argon2id loop with
//! the server's parameters and thread count for Login.
//!
//! Misses are measurements, not failures: the exit code is non-zero only when the bench itself
//! could not run (or a call failed).
//!
//! With `--users N` it also seeds an account of N users and measures the UserService at that
//! size (see [`crate::scale`]).

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use hdrhistogram::Histogram;
use tonic::{
    Request,
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use roster::{
    api::pb::{
        self, auth_service_client::AuthServiceClient,
        service_account_service_client::ServiceAccountServiceClient,
        user_service_client::UserServiceClient,
    },
    config::Settings,
    domain::passwords::{Argon2Settings, hash_blocking, verify_with_memory},
};

/// Password of the account the bench signs up.
pub(crate) const PASSWORD: &str = "Bench-Passw0rd-42";
/// Longest wait for a server to answer SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the activation email.
const MAIL_TIMEOUT: Duration = Duration::from_secs(15);
/// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ is 100 on every
/// architecture's userspace ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// Options of `roster-bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The `roster` executable to start (default: the one beside this program, as cargo builds
    /// both into one target folder).
    #[arg(long, conflicts_with = "addr")]
    pub server: Option<PathBuf>,
    /// Bench the server already listening here instead of starting one (start it with a high
    /// ROSTER_LOGIN_RATE_PER_MINUTE: every call comes from this one address).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Process id of the server given with --addr, to report its resident memory and CPU.
    #[arg(long, requires = "addr")]
    pub pid: Option<u32>,
    /// Mail folder of the server given with --addr (its ROSTER_MAIL_URL `file://` folder), where
    /// the activation email is read.
    #[arg(long, default_value = "./mail", requires = "addr")]
    pub mail_dir: PathBuf,
    /// Database of the started server (default: a new SQLite file in a scratch folder).
    #[arg(long, conflicts_with = "addr")]
    pub database_url: Option<String>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Measured time per RPC (and for the argon2 loop), over all rounds.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each measurement.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Rounds: each RPC and the argon2 loop are measured for `duration / rounds` in turn, round
    /// after round, so that noise from other processes falls on all of them alike.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Threads of the client's runtime; 1 runs the client on a current-thread runtime.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_threads: u32,
    /// RPCs to drive, comma-separated (default: all); ratios need `health` in the same run.
    #[arg(long = "rpc", value_enum, value_delimiter = ',')]
    pub rpcs: Vec<Rpc>,
    /// Skip the raw argon2 loop.
    #[arg(long)]
    pub no_argon2: bool,
    /// Seed the account with this many users first (use PostgreSQL: `--database-url`), and
    /// measure GetUser, a deep ListUsers page, an invitation import and a deactivation by filter.
    #[arg(long, default_value_t = 0)]
    pub users: u64,
    /// Users of the seeded account deactivated by one filtered mass action.
    #[arg(long, default_value_t = 100_000)]
    pub deactivate: u64,
    /// Invitation rows imported in one call, after everything else.
    #[arg(long, default_value_t = 100_000)]
    pub invitations: u64,
    /// Pairs of calls about an existing and an unknown user (RequestPasswordReset, Login with a
    /// wrong password) whose latencies are compared; 0 leaves the comparison out. A server
    /// given with --addr needs a high ROSTER_LOCKOUT_THRESHOLD.
    #[arg(long, default_value_t = 200)]
    pub enumeration_calls: usize,
}

/// Runs the bench and prints its report; the process exit code.
pub fn run(args: &BenchArgs) -> ExitCode {
    // The client shares this machine's cores with the server, so it should cost as little CPU per
    // call as possible: one current-thread runtime (no cross-thread wake-ups or work stealing)
    // gave the highest Health/Check throughput on the 2-core machine, and it leaves the server
    // its two workers. `--client-threads` is there to check that claim.
    let runtime = if args.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roster-bench: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args.clone())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("roster-bench: some calls failed (see the errors column)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("roster-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The RPCs the bench drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    /// `grpc.health.v1.Health/Check`, the baseline.
    Health,
    /// `roster.v1.AuthService/ValidateToken`.
    ValidateToken,
    /// `roster.v1.AuthService/ValidateToken` of a service account's API key.
    ValidateApiKey,
    /// `roster.v1.AuthService/WhoAmI`.
    WhoAmI,
    /// `roster.v1.AuthService/Login`.
    Login,
    /// `roster.v1.UserService/GetUser`, cycling through users of the seeded account.
    GetUser,
    /// `roster.v1.UserService/ListUsers`, the first page of 50.
    ListFirstPage,
    /// `roster.v1.UserService/ListUsers`, a page of 50 deep in the seeded account.
    ListDeepPage,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Self::Health => "grpc.health.v1.Health/Check",
            Self::ValidateToken => "roster.v1.AuthService/ValidateToken",
            Self::ValidateApiKey => "AuthService/ValidateToken (API key)",
            Self::WhoAmI => "roster.v1.AuthService/WhoAmI",
            Self::Login => "roster.v1.AuthService/Login",
            Self::GetUser => "roster.v1.UserService/GetUser",
            Self::ListFirstPage => "UserService/ListUsers (first page)",
            Self::ListDeepPage => "UserService/ListUsers (deep page)",
        }
    }
}

/// What the calls need: the signed-up account's credentials and a valid access token.
pub(crate) struct Fixture {
    pub(crate) access_token: String,
    /// A key of a service account of the same account.
    pub(crate) api_key: String,
    pub(crate) bearer: MetadataValue<Ascii>,
    pub(crate) login: pb::LoginRequest,
    /// GetUser cycles through these (with `--users`).
    pub(crate) user_ids: Vec<String>,
    /// Where the deep ListUsers page starts (with `--users`).
    pub(crate) deep_page_token: String,
}

/// One RPC's measurement, summed over rounds.
struct Phase {
    rpc: Rpc,
    histogram: Histogram<u64>,
    window: Duration,
    /// Calls per second of each round.
    rates: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
}

impl Phase {
    fn calls(&self) -> u64 {
        self.histogram.len()
    }

    fn rate(&self) -> f64 {
        self.calls() as f64 / self.window.as_secs_f64()
    }

    fn quantile_ms(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The server's CPU per call, in microseconds ("n/a" when not measured).
    fn server_us_per_call(&self) -> String {
        match (self.server_cpu, self.calls()) {
            (Some(cpu), calls) if calls > 0 => {
                format!("{:.0}", cpu.as_secs_f64() * 1e6 / calls as f64)
            }
            _ => "n/a".to_owned(),
        }
    }

    /// Server plus client CPU per call.
    fn cpu_per_call(&self) -> Option<Duration> {
        let calls = u32::try_from(self.calls())
            .ok()
            .filter(|calls| *calls > 0)?;
        Some((self.server_cpu? + self.client_cpu?) / calls)
    }

    /// Adds a later round of the same RPC.
    fn absorb(&mut self, round: Phase) -> anyhow::Result<()> {
        self.histogram.add(&round.histogram)?;
        self.window += round.window;
        self.rates.extend(round.rates);
        self.errors += round.errors;
        self.first_error = self.first_error.take().or(round.first_error);
        self.server_cpu = add(self.server_cpu, round.server_cpu);
        self.client_cpu = add(self.client_cpu, round.client_cpu);
        Ok(())
    }
}

/// The raw argon2 loop's measurement, summed over rounds.
struct Bound {
    verifications: u64,
    window: Duration,
    /// Verifications per second of each round.
    rates: Vec<f64>,
    /// CPU of this process during the measured windows.
    cpu: Option<Duration>,
}

impl Bound {
    fn rate(&self) -> f64 {
        self.verifications as f64 / self.window.as_secs_f64()
    }

    fn absorb(&mut self, round: Bound) {
        self.verifications += round.verifications;
        self.window += round.window;
        self.rates.extend(round.rates);
        self.cpu = add(self.cpu, round.cpu);
    }
}

fn add(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(a? + b?)
}

/// What one worker saw.
struct Tally {
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Resident memory of the server at the points the report names, in KiB.
#[derive(Default)]
struct Memory {
    idle: Option<u64>,
    after_setup: Option<u64>,
    after_load: Option<u64>,
    peak: Option<u64>,
    /// The large account: right after the mass actions, and a minute later.
    after_mass_actions: Option<u64>,
    a_minute_later: Option<u64>,
    /// Threads of the server after the load.
    threads: Option<u64>,
}

/// The server the bench drives.
struct Target {
    addr: SocketAddr,
    pid: Option<u32>,
    mail_dir: PathBuf,
    /// Set when the bench started the server; stopped at the end.
    process: Option<ServerProcess>,
    description: String,
}

async fn bench(args: BenchArgs) -> anyhow::Result<bool> {
    // The server reads its argon2 parameters and hash concurrency from the same environment.
    let settings = Settings::from_pairs(&[]).context("reading ROSTER_* settings")?;
    let load_before = load_average();
    let mut memory = Memory::default();
    let mut starts: Vec<(String, Duration)> = Vec::new();
    let scratch = ScratchDir::new()?;
    let mut started_config: Option<ServerConfig> = None;

    let mut target = match args.addr {
        Some(addr) => Target {
            addr,
            pid: args.pid,
            mail_dir: args.mail_dir.clone(),
            process: None,
            description: format!("{addr} (already running)"),
        },
        None => {
            let exe = match &args.server {
                Some(exe) => exe.clone(),
                None => server_beside_this_program()?,
            };
            let (database_url, first) = match &args.database_url {
                Some(url) => (url.clone(), "first start"),
                None => (
                    format!("sqlite://{}", scratch.path().join("roster.db").display()),
                    "first start (new database)",
                ),
            };
            let mail_dir = scratch.path().join("mail");
            let config = ServerConfig {
                exe,
                database_url,
                mail_url: format!("file://{}", mail_dir.display()),
                extra_env: Vec::new(),
            };
            let (process, took) = config.start().await?;
            starts.push((first.to_owned(), took));
            process.stop().await?;
            let (process, took) = config.start().await?;
            starts.push(("start to SERVING (existing database)".to_owned(), took));
            let target = Target {
                addr: process.addr,
                pid: Some(process.pid()),
                mail_dir,
                description: format!(
                    "pid {} on {}, started by the bench, database {}",
                    process.pid(),
                    process.addr,
                    config.database_url
                ),
                process: Some(process),
            };
            started_config = Some(config);
            target
        }
    };

    if target.pid.is_some() {
        // Let the background tasks (mail sender, database watch) settle before calling it idle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        memory.idle = target.pid.and_then(|pid| proc_status(pid, "VmRSS"));
    }

    let channels = connect(target.addr, args.connections).await?;
    let mut fixture = setup(&channels[0], &target.mail_dir).await?;
    let prepared = if args.users > 0 {
        let prepared = crate::scale::prepare(
            &channels[0],
            &fixture,
            args.users,
            args.deactivate.min(args.users),
        )
        .await?;
        fixture.user_ids = prepared.user_ids.clone();
        fixture.deep_page_token = prepared.deep_page_token.clone();
        Some(prepared)
    } else {
        None
    };
    let searches = match &prepared {
        Some(prepared) => Some(crate::scale::searches(&channels[0], &fixture, prepared).await?),
        None => None,
    };
    let fixture = Arc::new(fixture);
    memory.after_setup = target.pid.and_then(|pid| proc_status(pid, "VmRSS"));

    let argon2 = settings.argon2;
    let threads = settings.hash_concurrency;
    let hashed = if args.no_argon2 {
        None
    } else {
        let hashed = tokio::task::spawn_blocking(move || HashedPassword::new(argon2))
            .await
            .context("the argon2 hash panicked")??;
        Some(Arc::new(hashed))
    };
    let mut all = vec![
        Rpc::Health,
        Rpc::ValidateToken,
        Rpc::ValidateApiKey,
        Rpc::WhoAmI,
        Rpc::Login,
    ];
    if prepared.is_some() {
        all.extend([Rpc::GetUser, Rpc::ListFirstPage, Rpc::ListDeepPage]);
    }
    let selected: Vec<Rpc> = all
        .into_iter()
        .filter(|rpc| args.rpcs.is_empty() || args.rpcs.contains(rpc))
        .collect();
    let slice = args.duration / args.rounds;
    let mut phases: Vec<Phase> = Vec::new();
    let mut bound: Option<Bound> = None;
    for _ in 0..args.rounds {
        for &rpc in &selected {
            let round = drive(rpc, &args, slice, &channels, &fixture, target.pid).await?;
            match phases.iter_mut().find(|phase| phase.rpc == rpc) {
                Some(phase) => phase.absorb(round)?,
                None => phases.push(round),
            }
        }
        // Right after Login, so that both see the same machine.
        if let Some(hashed) = &hashed {
            let (hashed, warmup) = (hashed.clone(), args.warmup);
            let round =
                tokio::task::spawn_blocking(move || argon2_round(&hashed, threads, warmup, slice))
                    .await
                    .context("the argon2 loop panicked")??;
            match &mut bound {
                Some(bound) => bound.absorb(round),
                None => bound = Some(round),
            }
        }
    }
    // The cost of metrics and tracing: only with a server of the bench's own, on its database.
    let observed = match &started_config {
        Some(config) if selected.contains(&Rpc::ValidateToken) => Some(
            observed_cost(config, &args, slice, &channels, &fixture, target.pid)
                .await
                .context("measuring the cost of metrics and tracing")?,
        ),
        _ => None,
    };
    let enumeration = if args.enumeration_calls > 0 {
        Some(crate::enumeration::probe(&channels[0], &fixture.login, args.enumeration_calls).await?)
    } else {
        None
    };
    memory.after_load = target.pid.and_then(|pid| proc_status(pid, "VmRSS"));
    memory.peak = target.pid.and_then(|pid| proc_status(pid, "VmHWM"));
    memory.threads = target.pid.and_then(|pid| proc_status(pid, "Threads"));
    let timed = match &prepared {
        Some(prepared) => Some(
            crate::scale::timed(
                &channels[0],
                &fixture,
                prepared,
                args.invitations,
                &target.mail_dir,
            )
            .await?,
        ),
        None => None,
    };
    if timed.is_some() {
        // Peak after the mass actions (VmHWM covers the whole run), and whether the memory of
        // the bulk work went back.
        memory.peak = target.pid.and_then(|pid| proc_status(pid, "VmHWM"));
        memory.after_mass_actions = target.pid.and_then(|pid| proc_status(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_secs(60)).await;
        memory.a_minute_later = target.pid.and_then(|pid| proc_status(pid, "VmRSS"));
    }
    drop(channels);

    if let Some(process) = target.process.take()
        && let Err(err) = process.stop().await
    {
        // The measurements stand; say so after them.
        eprintln!("roster-bench: {err:#}");
    }

    let report = Report {
        args: &args,
        target: &target,
        starts: &starts,
        memory: &memory,
        phases: &phases,
        argon2,
        threads,
        bound: bound.as_ref(),
        load: (load_before, load_average()),
        prepared: prepared.as_ref(),
        timed: timed.as_ref(),
        searches: searches.as_ref(),
        enumeration: enumeration.as_deref(),
        observed: observed.as_ref(),
    };
    print!("{}", report.render());
    Ok(phases.iter().all(|phase| phase.errors == 0))
}

/// ValidateToken at the bench's server (metrics and tracing off) and at a second one on the same
/// database with both on, round after round.
struct ObservedCost {
    plain: Phase,
    observed: Phase,
    spans: u64,
    metric_exports: u64,
    scrapes: u64,
    scraped_bytes: u64,
}

impl ObservedCost {
    fn ratio(&self) -> f64 {
        self.observed.rate() / self.plain.rate().max(1e-9)
    }
}

async fn observed_cost(
    config: &ServerConfig,
    args: &BenchArgs,
    slice: Duration,
    plain_channels: &[Channel],
    fixture: &Arc<Fixture>,
    plain_pid: Option<u32>,
) -> anyhow::Result<ObservedCost> {
    use std::sync::atomic::Ordering;
    let metrics = free_port()?;
    let (collector, received, tasks) = crate::observed::collect(metrics).await?;
    let observed_config = ServerConfig {
        extra_env: vec![
            ("ROSTER_METRICS_LISTEN".into(), metrics.to_string()),
            ("OTEL_SDK_DISABLED".into(), "false".into()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://{collector}"),
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL".into(), "1000".into()),
            ("OTEL_SERVICE_NAME".into(), "roster-bench".into()),
        ],
        ..config.clone()
    };
    let (process, _) = observed_config.start().await?;
    let channels = connect(process.addr, args.connections).await?;
    let (mut plain, mut observed): (Option<Phase>, Option<Phase>) = (None, None);
    for _ in 0..args.rounds {
        for (phase, channels, pid) in [
            (&mut plain, plain_channels, plain_pid),
            (&mut observed, &channels[..], Some(process.pid())),
        ] {
            let round = drive(Rpc::ValidateToken, args, slice, channels, fixture, pid).await?;
            match phase {
                Some(phase) => phase.absorb(round)?,
                None => *phase = Some(round),
            }
        }
    }
    drop(channels);
    // Stopping flushes the last spans to the collector.
    process.stop().await?;
    for task in tasks {
        task.abort();
    }
    Ok(ObservedCost {
        plain: plain.context("no round")?,
        observed: observed.context("no round")?,
        spans: received.spans.load(Ordering::Relaxed),
        metric_exports: received.metric_exports.load(Ordering::Relaxed),
        scrapes: received.scrapes.load(Ordering::Relaxed),
        scraped_bytes: received.scraped_bytes.load(Ordering::Relaxed),
    })
}

/// `roster` in the folder of this program.
fn server_beside_this_program() -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe().context("locating roster-bench")?;
    let exe = this.with_file_name(format!("roster{}", std::env::consts::EXE_SUFFIX));
    if !exe.exists() {
        bail!(
            "{} does not exist: build it (cargo build --release) or give --server",
            exe.display()
        );
    }
    Ok(exe)
}

/// How to start the server as a child process.
#[derive(Clone)]
struct ServerConfig {
    exe: PathBuf,
    database_url: String,
    mail_url: String,
    /// Set after the defaults, so that it overrides them.
    extra_env: Vec<(String, String)>,
}

impl ServerConfig {
    /// Starts `roster serve` on a free port and waits until it answers SERVING; returns the
    /// process and the time from spawn to SERVING.
    async fn start(&self) -> anyhow::Result<(ServerProcess, Duration)> {
        let addr = free_port()?;
        let started = Instant::now();
        let child = Command::new(&self.exe)
            .arg("serve")
            .env("ROSTER_LISTEN", addr.to_string())
            .env("ROSTER_DATABASE_URL", &self.database_url)
            .env("ROSTER_MAIL_URL", &self.mail_url)
            .env("ROSTER_LOG", "warn")
            // All the bench's calls come from one address: lift the per-address limit on
            // login-type calls, or Login would measure the limiter instead of the hashing.
            .env("ROSTER_LOGIN_RATE_PER_MINUTE", "1000000000")
            // The enumeration probe's wrong passwords must not lock the bench's user.
            .env("ROSTER_LOCKOUT_THRESHOLD", "1000000000")
            // Measured without metrics or trace export, whatever this shell's environment says;
            // the observed-cost phase turns them on for a server of its own.
            .env("ROSTER_METRICS_LISTEN", "")
            .env("OTEL_SDK_DISABLED", "true")
            .envs(self.extra_env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(server_output())
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let mut process = ServerProcess { child, addr };
        let took = process.wait_serving(started).await?;
        Ok((process, took))
    }
}

/// Where the started server's log (its stdout) goes: the bench's stderr, away from the report.
fn server_output() -> Stdio {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            return Stdio::from(fd);
        }
    }
    Stdio::null()
}

/// A server started by the bench; killed if dropped while still running.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls Health/Check until it answers SERVING; the time since `started`.
    async fn wait_serving(&mut self, started: Instant) -> anyhow::Result<Duration> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1));
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited ({status}) before it was serving");
            }
            if let Ok(channel) = endpoint.connect().await {
                let answer = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await;
                if let Ok(response) = answer
                    && response.into_inner().status == ServingStatus::Serving as i32
                {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("the server was not serving after {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sends SIGTERM and waits for a graceful exit (killing it after 10 s).
    async fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed ({status})", self.pid());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the server exited with {status} on SIGTERM");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server did not stop within 10 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A scratch folder for the database and mail, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("roster-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback address whose port was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// Opens `count` HTTP/2 connections to `addr`.
async fn connect(addr: SocketAddr, count: u32) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::new();
    for _ in 0..count {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(channels)
}

/// Signs up a new account, activates it from the emailed link and logs in.
async fn setup(channel: &Channel, mail_dir: &Path) -> anyhow::Result<Fixture> {
    let mut auth = AuthServiceClient::new(channel.clone());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let email = format!("bench-{nanos}@example.com");
    let signed_up = auth
        .sign_up(pb::SignUpRequest {
            account_name: "Bench".into(),
            first_name: "Bench".into(),
            last_name: "Runner".into(),
            email: email.clone(),
            password: PASSWORD.into(),
        })
        .await
        .context("SignUp")?
        .into_inner();
    let token = activation_token(mail_dir, &email).await?;
    auth.activate_account(pb::ActivateAccountRequest {
        token,
        password: String::new(),
    })
    .await
    .context("ActivateAccount")?;
    let login = pb::LoginRequest {
        tenant: signed_up.tenant_slug,
        login: email,
        password: PASSWORD.into(),
    };
    let access_token = auth
        .login(login.clone())
        .await
        .context("Login")?
        .into_inner()
        .access_token;
    let bearer: MetadataValue<Ascii> = format!("Bearer {access_token}")
        .parse()
        .context("the access token is not a valid header value")?;
    let mut accounts = ServiceAccountServiceClient::new(channel.clone());
    let mut create = Request::new(pb::CreateServiceAccountRequest {
        name: "bench service".into(),
        description: String::new(),
        roles: vec!["REPORTS".into()],
    });
    create
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let account = accounts
        .create_service_account(create)
        .await
        .context("CreateServiceAccount")?
        .into_inner();
    let mut make_key = Request::new(pb::CreateApiKeyRequest {
        service_account_id: account.id,
        expire_time: None,
    });
    make_key
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let api_key = accounts
        .create_api_key(make_key)
        .await
        .context("CreateApiKey")?
        .into_inner()
        .api_key;
    Ok(Fixture {
        access_token,
        api_key,
        bearer,
        login,
        user_ids: Vec::new(),
        deep_page_token: String::new(),
    })
}

/// Waits for the `.eml` addressed to `email` in `mail_dir` and returns the token of its link.
async fn activation_token(mail_dir: &Path, email: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + MAIL_TIMEOUT;
    loop {
        if let Ok(entries) = std::fs::read_dir(mail_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                // Dot files are messages still being written.
                if name.starts_with('.') || !name.ends_with(".eml") {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(entry.path()) else {
                    continue;
                };
                if !text.contains(email) {
                    continue;
                }
                if let Some(token) = link_token(&text) {
                    return Ok(token);
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no activation email for {email} in {} after {MAIL_TIMEOUT:?}",
                mail_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the first `token=` in a message.
fn link_token(text: &str) -> Option<String> {
    let start = text.find("token=")? + "token=".len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '<' | '>' | '&'))
        .collect();
    (!token.is_empty()).then_some(token)
}

/// Drives `rpc` for one round of `slice` (after the warm-up) with `--concurrency` workers spread
/// round-robin over `channels`.
async fn drive(
    rpc: Rpc,
    args: &BenchArgs,
    slice: Duration,
    channels: &[Channel],
    fixture: &Arc<Fixture>,
    pid: Option<u32>,
) -> anyhow::Result<Phase> {
    let measure_start = Instant::now() + args.warmup;
    let measure_end = measure_start + slice;
    let workers: Vec<_> = (0..args.concurrency as usize)
        .map(|index| {
            let channel = channels[index % channels.len()].clone();
            // Each worker starts at its own share of GetUser's working set.
            let first_turn = index * fixture.user_ids.len() / args.concurrency as usize;
            tokio::spawn(worker(
                rpc,
                channel,
                fixture.clone(),
                first_turn,
                (measure_start, measure_end),
            ))
        })
        .collect();
    tokio::time::sleep_until(measure_start.into()).await;
    let server_before = pid.and_then(cpu_time);
    let client_before = cpu_time(std::process::id());
    let actual_start = Instant::now();
    tokio::time::sleep_until(measure_end.into()).await;
    let server_after = pid.and_then(cpu_time);
    let client_after = cpu_time(std::process::id());
    let actual_window = actual_start.elapsed();

    let mut histogram = new_histogram()?;
    let mut errors = 0;
    let mut first_error = None;
    for handle in workers {
        let tally = handle.await.context("a bench worker panicked")??;
        histogram.add(&tally.histogram)?;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    let delta = |before: Option<Duration>, after: Option<Duration>| {
        // The CPU samples are taken when this task gets the thread, which may be late under load:
        // scale to the nominal window.
        let (before, after) = (before?, after?);
        let scale = slice.as_secs_f64() / actual_window.as_secs_f64().max(1e-3);
        Some(after.saturating_sub(before).mul_f64(scale))
    };
    let rate = histogram.len() as f64 / slice.as_secs_f64();
    Ok(Phase {
        rpc,
        histogram,
        window: slice,
        rates: vec![rate],
        errors,
        first_error,
        server_cpu: delta(server_before, server_after),
        client_cpu: delta(client_before, client_after),
    })
}

/// Latencies in microseconds, up to a minute.
fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Calls `rpc` in a loop until `measure_end`, recording the calls that finish inside the window.
async fn worker(
    rpc: Rpc,
    channel: Channel,
    fixture: Arc<Fixture>,
    first_turn: usize,
    (measure_start, measure_end): (Instant, Instant),
) -> anyhow::Result<Tally> {
    let mut health = HealthClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let mut auth = AuthServiceClient::new(channel);
    let mut turn = first_turn;
    let mut tally = Tally {
        histogram: new_histogram()?,
        errors: 0,
        first_error: None,
    };
    loop {
        let started = Instant::now();
        if started >= measure_end {
            return Ok(tally);
        }
        let outcome = call(rpc, &mut health, &mut auth, &mut users, &fixture, turn).await;
        turn = turn.wrapping_add(1);
        let finished = Instant::now();
        match outcome {
            Ok(()) if finished >= measure_start && finished <= measure_end => {
                let micros = u64::try_from((finished - started).as_micros()).unwrap_or(u64::MAX);
                tally.histogram.saturating_record(micros.max(1));
            }
            Ok(()) => {}
            Err(err) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(err);
            }
        }
    }
}

/// One call; an unexpected answer is an error too.
async fn call(
    rpc: Rpc,
    health: &mut HealthClient<Channel>,
    auth: &mut AuthServiceClient<Channel>,
    users: &mut UserServiceClient<Channel>,
    fixture: &Fixture,
    turn: usize,
) -> Result<(), String> {
    let status = |err: tonic::Status| format!("{:?}: {}", err.code(), err.message());
    match rpc {
        Rpc::Health => {
            let answer = health
                .check(HealthCheckRequest::default())
                .await
                .map_err(status)?;
            if answer.into_inner().status != ServingStatus::Serving as i32 {
                return Err("not SERVING".into());
            }
        }
        Rpc::ValidateToken => {
            let answer = auth
                .validate_token(pb::ValidateTokenRequest {
                    token: fixture.access_token.clone(),
                    client_address: String::new(),
                })
                .await
                .map_err(status)?;
            if !answer.into_inner().valid {
                return Err("the access token was reported invalid".into());
            }
        }
        Rpc::ValidateApiKey => {
            let answer = auth
                .validate_token(pb::ValidateTokenRequest {
                    token: fixture.api_key.clone(),
                    client_address: String::new(),
                })
                .await
                .map_err(status)?;
            if !answer.into_inner().valid {
                return Err("the API key was reported invalid".into());
            }
        }
        Rpc::WhoAmI => {
            let mut request = Request::new(pb::WhoAmIRequest {});
            request
                .metadata_mut()
                .insert("authorization", fixture.bearer.clone());
            auth.who_am_i(request).await.map_err(status)?;
        }
        Rpc::Login => {
            auth.login(fixture.login.clone()).await.map_err(status)?;
        }
        Rpc::GetUser => {
            let user_id = fixture
                .user_ids
                .get(turn % fixture.user_ids.len().max(1))
                .cloned()
                .ok_or("no users to read")?;
            users
                .get_user(crate::scale::authed(
                    pb::GetUserRequest { user_id },
                    fixture,
                ))
                .await
                .map_err(status)?;
        }
        Rpc::ListFirstPage | Rpc::ListDeepPage => {
            let page_token = if rpc == Rpc::ListDeepPage {
                fixture.deep_page_token.clone()
            } else {
                String::new()
            };
            let page = users
                .list_users(crate::scale::authed(
                    pb::ListUsersRequest {
                        page_size: 50,
                        page_token,
                        ..Default::default()
                    },
                    fixture,
                ))
                .await
                .map_err(status)?;
            if page.into_inner().users.len() != 50 {
                return Err("a short page".into());
            }
        }
    }
    Ok(())
}

/// A password and its hash with the server's parameters, for the raw argon2 loop.
struct HashedPassword {
    params: argon2::Params,
    stored: String,
}

impl HashedPassword {
    fn new(settings: Argon2Settings) -> anyhow::Result<Self> {
        let params = argon2::Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|err| anyhow!("argon2 parameters: {err}"))?;
        let stored = hash_blocking(&params, PASSWORD)?;
        Ok(Self { params, stored })
    }
}

/// One round of the raw argon2id loop: verifications on `threads` threads with the server's
/// parameters, the most Login can do on this machine. Blocks for `warmup + slice`.
fn argon2_round(
    hashed: &HashedPassword,
    threads: usize,
    warmup: Duration,
    slice: Duration,
) -> anyhow::Result<Bound> {
    let measure_start = Instant::now() + warmup;
    let measure_end = measure_start + slice;
    let (counts, cpu) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = 0u64;
                    // Each thread reuses its working memory, as the server's hashing threads do.
                    let mut memory = Vec::new();
                    while Instant::now() < measure_end {
                        let verification = verify_with_memory(
                            &hashed.params,
                            PASSWORD,
                            &hashed.stored,
                            &mut memory,
                        );
                        if !verification.matches {
                            return Err(anyhow!("argon2 verification failed"));
                        }
                        let finished = Instant::now();
                        if finished >= measure_start && finished <= measure_end {
                            done += 1;
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        std::thread::sleep(measure_start.saturating_duration_since(Instant::now()));
        let before = cpu_time(std::process::id());
        std::thread::sleep(measure_end.saturating_duration_since(Instant::now()));
        let cpu = cpu_time(std::process::id())
            .zip(before)
            .map(|(after, before)| after.saturating_sub(before));
        let counts = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .map_err(|_| anyhow!("an argon2 thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<u64>>>();
        counts.map(|counts| (counts, cpu))
    })?;
    let verifications = counts.iter().sum::<u64>();
    Ok(Bound {
        verifications,
        window: slice,
        rates: vec![verifications as f64 / slice.as_secs_f64()],
        cpu,
    })
}

/// The 1, 5 and 15 minute load averages of the machine.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The number on a line of `/proc/<pid>/status`: KiB for `VmRSS` and `VmHWM`, a count for
/// `Threads`.
fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// User plus system CPU time of a process, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (state); utime and stime are
    // fields 14 and 15.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (user + system) as f64 / TICKS_PER_SECOND,
    ))
}

/// Everything the report prints.
struct Report<'a> {
    args: &'a BenchArgs,
    target: &'a Target,
    starts: &'a [(String, Duration)],
    memory: &'a Memory,
    phases: &'a [Phase],
    argon2: Argon2Settings,
    threads: usize,
    /// The raw argon2 loop; `None` when skipped.
    bound: Option<&'a Bound>,
    /// Load averages before and after the run, to judge how noisy the machine was.
    load: (Option<String>, Option<String>),
    /// The large account (`--users`).
    prepared: Option<&'a crate::scale::Prepared>,
    timed: Option<&'a crate::scale::Timed>,
    searches: Option<&'a crate::scale::Searches>,
    enumeration: Option<&'a [crate::enumeration::Comparison]>,
    /// ValidateToken with metrics and tracing on, beside the same without.
    observed: Option<&'a ObservedCost>,
}

/// Met, missed, or not measured in this run.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a ",
    }
}

fn megabytes(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_owned(),
        |kib| format!("{:.1} MB", kib as f64 * 1024.0 / 1e6),
    )
}

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// The smallest and largest of per-round ratios, as `min-max%`.
fn spread(ratios: impl Iterator<Item = f64>) -> String {
    let (low, high) = ratios.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), r| {
        (low.min(r), high.max(r))
    });
    if low.is_finite() && high.is_finite() {
        format!("{:.0}-{:.0}%", low * 100.0, high * 100.0)
    } else {
        "n/a".to_owned()
    }
}

/// Per-round ratios of `rates` to `bases`.
fn round_ratios<'a>(rates: &'a [f64], bases: &'a [f64]) -> impl Iterator<Item = f64> + 'a {
    rates
        .iter()
        .zip(bases)
        .filter(|(_, base)| **base > 0.0)
        .map(|(rate, base)| rate / base)
}

impl Report<'_> {
    fn phase(&self, rpc: Rpc) -> Option<&Phase> {
        self.phases.iter().find(|phase| phase.rpc == rpc)
    }

    fn ratio_to_health(&self, rpc: Rpc) -> Option<f64> {
        let base = self.phase(Rpc::Health)?.rate();
        let rate = self.phase(rpc)?.rate();
        (base > 0.0).then_some(rate / base)
    }

    /// Health/Check's CPU per call over this RPC's: the throughput ratio a machine busy with
    /// nothing else would show, since client and server then share the cores by CPU cost.
    fn cpu_ratio_to_health(&self, rpc: Rpc) -> Option<f64> {
        let base = self.phase(Rpc::Health)?.cpu_per_call()?;
        let cost = self.phase(rpc)?.cpu_per_call()?;
        (!cost.is_zero()).then(|| base.as_secs_f64() / cost.as_secs_f64())
    }

    fn login_ratio(&self) -> Option<f64> {
        let login = self.phase(Rpc::Login)?.rate();
        let bound = self.bound?.rate();
        (bound > 0.0).then_some(login / bound)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let args = self.args;
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let client = if args.client_threads == 1 {
            "current-thread runtime".to_owned()
        } else {
            format!("{}-thread runtime", args.client_threads)
        };
        let na = || "n/a".to_owned();
        let _ = writeln!(out, "roster-bench");
        let _ = writeln!(out, "  server:   {}", self.target.description);
        let _ = writeln!(
            out,
            "  load:     {} calls in flight over {} HTTP/2 connections; {:?} per RPC in {} rounds, \
             each after {:?} of warm-up",
            args.concurrency, args.connections, args.duration, args.rounds, args.warmup
        );
        let _ = writeln!(
            out,
            "  machine:  {cores} cores shared by the client (a {client}) and the server; load \
             average {} before, {} after",
            self.load.0.clone().unwrap_or_else(na),
            self.load.1.clone().unwrap_or_else(na)
        );
        let _ = writeln!(out);
        for (label, took) in self.starts {
            let _ = writeln!(out, "{label:<40} {:>8.1} ms", took.as_secs_f64() * 1000.0);
        }
        let memory = [
            ("resident memory, idle", self.memory.idle),
            ("resident memory, after setup", self.memory.after_setup),
            ("resident memory, after load", self.memory.after_load),
            ("resident memory, peak (VmHWM)", self.memory.peak),
            (
                "resident memory, after the mass actions",
                self.memory.after_mass_actions,
            ),
            (
                "resident memory, a minute later",
                self.memory.a_minute_later,
            ),
        ];
        for (label, kib) in memory {
            let _ = writeln!(out, "{label:<40} {:>11}", megabytes(kib));
        }
        let _ = writeln!(
            out,
            "{:<40} {:>11}",
            "server threads, after load",
            self.memory
                .threads
                .map_or_else(na, |threads| threads.to_string())
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<36} {:>7} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6}",
            "RPC",
            "calls",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "/Health",
            "rounds",
            "srv us",
            "cli us",
            "by CPU",
            "errors"
        );
        let health_rates = self
            .phase(Rpc::Health)
            .map(|phase| phase.rates.as_slice())
            .unwrap_or_default();
        for phase in self.phases {
            let per_call = |cpu: Option<Duration>| {
                cpu.filter(|_| phase.calls() > 0).map_or_else(na, |cpu| {
                    format!("{:.0}", cpu.as_secs_f64() * 1e6 / phase.calls() as f64)
                })
            };
            let _ = writeln!(
                out,
                "{:<36} {:>7} {:>8.0} {:>7.2} {:>7.2} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6}",
                phase.rpc.name(),
                phase.calls(),
                phase.rate(),
                phase.quantile_ms(0.5),
                phase.quantile_ms(0.99),
                percent(self.ratio_to_health(phase.rpc)),
                spread(round_ratios(&phase.rates, health_rates)),
                per_call(phase.server_cpu),
                per_call(phase.client_cpu),
                percent(self.cpu_ratio_to_health(phase.rpc)),
                phase.errors
            );
        }
        let _ = writeln!(
            out,
            "  /Health: throughput as a share of Health/Check's; rounds: its range over the \
             rounds;\n  srv us, cli us: server and client CPU per call; by CPU: Health/Check's \
             CPU per call over this RPC's"
        );
        for phase in self.phases {
            if let Some(err) = &phase.first_error {
                let _ = writeln!(out, "  first error of {}: {err}", phase.rpc.name());
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "raw argon2id bound (m={} KiB, t={}, p={}, {} threads): {}",
            self.argon2.memory_kib,
            self.argon2.iterations,
            self.argon2.parallelism,
            self.threads,
            self.bound.map_or_else(
                || "skipped".to_owned(),
                |bound| {
                    let cpu =
                        bound
                            .cpu
                            .filter(|_| bound.verifications > 0)
                            .map_or_else(na, |cpu| {
                                format!(
                                    "{:.1}",
                                    cpu.as_secs_f64() * 1e3 / bound.verifications as f64
                                )
                            });
                    format!("{:.1} verifications/s, {cpu} ms CPU each", bound.rate())
                }
            ),
        );
        if let (Some(login), Some(bound)) = (self.phase(Rpc::Login), self.bound) {
            let _ = writeln!(
                out,
                "Login: {:.1} calls/s = {} of the bound (rounds {})",
                login.rate(),
                percent(self.login_ratio()),
                spread(round_ratios(&login.rates, &bound.rates))
            );
        }
        if let Some(cost) = self.observed {
            let _ = writeln!(
                out,
                "ValidateToken with metrics and tracing on (/metrics scraped every 1 s, traces and \
                 metrics over OTLP to a collector): {:.0} calls/s = {} of the same without \
                 ({:.0} calls/s; rounds {}); p50 {:.2} vs {:.2} ms; srv us {} vs {}; the \
                 collector got {} spans and {} metric exports, {} scrapes of {:.1} KB",
                cost.observed.rate(),
                percent(Some(cost.ratio())),
                cost.plain.rate(),
                spread(round_ratios(&cost.observed.rates, &cost.plain.rates)),
                cost.observed.quantile_ms(0.5),
                cost.plain.quantile_ms(0.5),
                cost.observed.server_us_per_call(),
                cost.plain.server_us_per_call(),
                cost.spans,
                cost.metric_exports,
                cost.scrapes,
                cost.scraped_bytes as f64 / cost.scrapes.max(1) as f64 / 1000.0,
            );
        }
        if let Some(comparisons) = self.enumeration {
            let _ = write!(out, "{}", crate::enumeration::render(comparisons));
        }
        if let Some(prepared) = self.prepared {
            let _ = writeln!(out);
            let _ = write!(out, "{}", crate::scale::render(prepared, self.timed));
            if let Some(searches) = self.searches {
                let _ = write!(out, "{}", crate::scale::render_searches(searches));
            }
            if let (Some(first), Some(deep)) = (
                self.phase(Rpc::ListFirstPage),
                self.phase(Rpc::ListDeepPage),
            ) {
                let _ = writeln!(
                    out,
                    "ListUsers page after {} users: {:.2}x the first page's cost (p50 {:.2} vs {:.2} ms)",
                    prepared.deep_position,
                    first.rate() / deep.rate().max(1e-9),
                    deep.quantile_ms(0.5),
                    first.quantile_ms(0.5)
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "targets:");
        let validate = self.ratio_to_health(Rpc::ValidateToken);
        let api_key = self.ratio_to_health(Rpc::ValidateApiKey);
        let who = self.ratio_to_health(Rpc::WhoAmI);
        let login = self.login_ratio();
        let existing = self
            .starts
            .iter()
            .find(|(label, _)| label.contains("existing"))
            .map(|(_, took)| *took);
        let lines = [
            (
                validate.map(|r| r >= 0.70),
                "ValidateToken >= 70% of Health/Check throughput",
                percent(validate),
            ),
            (
                api_key.map(|r| r >= 0.70),
                "ValidateToken (API key) >= 70% of Health/Check",
                percent(api_key),
            ),
            (
                who.map(|r| r >= 0.50),
                "WhoAmI >= 50% of Health/Check throughput",
                percent(who),
            ),
            (
                login.map(|r| r >= 0.90),
                "Login >= 90% of the raw argon2 bound",
                percent(login),
            ),
            (
                self.memory
                    .idle
                    .map(|kib| (kib as f64 * 1024.0 / 1e6) < 50.0),
                "idle resident memory < 50 MB",
                megabytes(self.memory.idle),
            ),
            (
                existing.map(|took| took < Duration::from_secs(1)),
                "start to SERVING < 1 s on an existing database",
                existing.map_or_else(na, |took| format!("{:.1} ms", took.as_secs_f64() * 1000.0)),
            ),
        ];
        for (met, target, value) in lines {
            let _ = writeln!(out, "  {}  {target:<48} {value}", verdict(met));
        }
        if let Some(cost) = self.observed {
            let _ = writeln!(
                out,
                "  {}  {:<48} {}",
                verdict(Some(cost.ratio() >= 0.90)),
                "ValidateToken, metrics+tracing on >= 90% of off",
                percent(Some(cost.ratio()))
            );
        }
        if let Some(prepared) = self.prepared {
            let get = self.ratio_to_health(Rpc::GetUser);
            let deep = self
                .phase(Rpc::ListFirstPage)
                .zip(self.phase(Rpc::ListDeepPage))
                .map(|(first, deep)| first.rate() / deep.rate().max(1e-9));
            let size = prepared.seeded + 1;
            let lines = [
                (
                    get.map(|r| r >= 0.50),
                    format!("GetUser >= 50% of Health/Check ({size} users)"),
                    percent(get),
                ),
                (
                    deep.map(|cost| cost <= 1.5),
                    "a deep ListUsers page <= 1.5x the first".to_owned(),
                    deep.map_or_else(na, |cost| format!("{cost:.2}x")),
                ),
            ];
            for (met, target, value) in lines {
                let _ = writeln!(out, "  {}  {target:<48} {value}", verdict(met));
            }
            if let Some(timed) = self.timed {
                for (met, target, value) in
                    crate::scale::targets(timed, args.invitations, args.deactivate.min(args.users))
                {
                    let _ = writeln!(out, "  {}  {target:<48} {value}", verdict(met));
                }
            }
            if self.timed.is_some() {
                let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
                let lines = [
                    (
                        self.memory.peak.map(|kib| mb(kib) <= 256.0),
                        "resident memory at peak <= 256 MB",
                        megabytes(self.memory.peak),
                    ),
                    (
                        self.memory.a_minute_later.map(|kib| mb(kib) < 100.0),
                        "resident memory a minute after the mass actions < 100 MB",
                        megabytes(self.memory.a_minute_later),
                    ),
                ];
                for (met, target, value) in lines {
                    let _ = writeln!(out, "  {}  {target:<72} {value}", verdict(met));
                }
            }
            if let Some(searches) = self.searches {
                for (met, target, value) in crate::scale::search_targets(searches) {
                    let _ = writeln!(out, "  {}  {target:<72} {value}", verdict(met));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_activation_link() {
        let mail = "Subject: Activate\r\n\r\nActivate my account: \
                    http://localhost:8080/activate?token=abc-DEF_123\r\n\r\nThe link is valid.";
        assert_eq!(link_token(mail).as_deref(), Some("abc-DEF_123"));
        assert_eq!(link_token("no link here"), None);
    }

    #[test]
    fn the_options_parse() {
        use clap::{Args, FromArgMatches};
        let command = BenchArgs::augment_args(clap::Command::new("bench"));
        command.clone().debug_assert();
        let matches = command
            .try_get_matches_from(["bench", "--rpc", "health,who-am-i", "--duration", "2s"])
            .unwrap();
        let args = BenchArgs::from_arg_matches(&matches).unwrap();
        assert_eq!(args.rpcs, vec![Rpc::Health, Rpc::WhoAmI]);
        assert_eq!(args.duration, Duration::from_secs(2));
        assert!(args.addr.is_none() && args.concurrency == 64 && args.rounds == 5);
    }

    #[test]
    fn spreads_show_the_lowest_and_highest_ratio() {
        let ratios: Vec<f64> = round_ratios(&[50.0, 90.0, 70.0], &[100.0, 100.0, 0.0]).collect();
        assert_eq!(ratios, vec![0.5, 0.9]);
        assert_eq!(spread(ratios.into_iter()), "50-90%");
        assert_eq!(spread(std::iter::empty()), "n/a");
    }

    #[test]
    fn process_figures_of_this_process_are_readable() {
        assert!(proc_status(std::process::id(), "VmRSS").is_some_and(|kib| kib > 0));
        assert!(cpu_time(std::process::id()).is_some());
    }
}
