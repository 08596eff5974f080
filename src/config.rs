//! One `Settings` struct: defaults, `ROSTER_*` environment variables and command-line flags. A
//! bad value stops the start with a message naming the setting. Secrets are never printed.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use ipnet::IpNet;

use crate::{domain::passwords::Argon2Settings, model::Secret};

/// Raw settings as given on the command line or in the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    /// Address to listen on.
    #[arg(
        global = true,
        long,
        env = "ROSTER_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: String,
    /// Database: a SQLite file (`sqlite://roster.db`, created when missing) or `postgres://...`.
    #[arg(
        global = true,
        long,
        env = "ROSTER_DATABASE_URL",
        default_value = "sqlite://roster.db"
    )]
    pub database_url: String,
    /// Maximum database connections (PostgreSQL; SQLite uses one).
    #[arg(
        global = true,
        long,
        env = "ROSTER_DATABASE_MAX_CONNECTIONS",
        default_value = "16"
    )]
    pub database_max_connections: String,
    /// Outgoing mail: `file://DIR` writes `.eml` files; `smtp://[user:pass@]host:port` sends.
    #[arg(
        global = true,
        long,
        env = "ROSTER_MAIL_URL",
        default_value = "file://./mail"
    )]
    pub mail_url: String,
    /// Sender of outgoing mail.
    #[arg(
        global = true,
        long,
        env = "ROSTER_MAIL_FROM",
        default_value = "roster <no-reply@roster.localhost>"
    )]
    pub mail_from: String,
    /// Base of the links in emails (default: roster itself, `http://localhost:<port of --listen>`,
    /// which serves the pages they open).
    #[arg(global = true, long, env = "ROSTER_PUBLIC_URL", default_value = "")]
    pub public_url: String,
    /// Log filter (`info`, `debug`, `roster=debug,info` ...).
    #[arg(global = true, long, env = "ROSTER_LOG", default_value = "info")]
    pub log: String,
    /// Log format: `text` or `json`.
    #[arg(global = true, long, env = "ROSTER_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Lifetime of access tokens.
    #[arg(
        global = true,
        long,
        env = "ROSTER_ACCESS_TOKEN_TTL",
        default_value = "15m"
    )]
    pub access_token_ttl: String,
    /// Lifetime of sessions (refresh tokens).
    #[arg(
        global = true,
        long,
        env = "ROSTER_REFRESH_TOKEN_TTL",
        default_value = "30days"
    )]
    pub refresh_token_ttl: String,
    /// Lifetime of activation and invitation links.
    #[arg(
        global = true,
        long,
        env = "ROSTER_ACTIVATION_TTL",
        default_value = "72h"
    )]
    pub activation_ttl: String,
    /// Argon2id memory in KiB.
    #[arg(
        global = true,
        long,
        env = "ROSTER_ARGON2_MEMORY_KIB",
        default_value = "19456"
    )]
    pub argon2_memory_kib: String,
    /// Argon2id passes.
    #[arg(
        global = true,
        long,
        env = "ROSTER_ARGON2_ITERATIONS",
        default_value = "2"
    )]
    pub argon2_iterations: String,
    /// Argon2id lanes.
    #[arg(
        global = true,
        long,
        env = "ROSTER_ARGON2_PARALLELISM",
        default_value = "1"
    )]
    pub argon2_parallelism: String,
    /// Password hashes computed at once (default: the number of cores).
    #[arg(global = true, long, env = "ROSTER_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<String>,
    /// Largest request or response message in bytes.
    #[arg(
        global = true,
        long,
        env = "ROSTER_MAX_MESSAGE_BYTES",
        default_value = "16777216"
    )]
    pub max_message_bytes: String,
    /// Requests served at once across all connections.
    #[arg(
        global = true,
        long,
        env = "ROSTER_MAX_CONCURRENT_REQUESTS",
        default_value = "1024"
    )]
    pub max_concurrent_requests: String,
    /// Comma-separated networks of proxies whose `x-forwarded-for` is believed.
    #[arg(
        global = true,
        long,
        env = "ROSTER_TRUSTED_PROXIES",
        default_value = ""
    )]
    pub trusted_proxies: String,
    /// Access-token signing key (at least 32 bytes); by default one is generated and kept in the
    /// database so that every replica shares it.
    #[arg(
        global = true,
        long,
        env = "ROSTER_TOKEN_SIGNING_KEY",
        hide_env_values = true
    )]
    pub token_signing_key: Option<String>,
    /// Failed passwords or second-factor codes in a row that lock a user.
    #[arg(
        global = true,
        long,
        env = "ROSTER_LOCKOUT_THRESHOLD",
        default_value = "5"
    )]
    pub lockout_threshold: String,
    /// How long a lockout lasts unless an admin lifts it sooner.
    #[arg(
        global = true,
        long,
        env = "ROSTER_LOCKOUT_COOLDOWN",
        default_value = "15m"
    )]
    pub lockout_cooldown: String,
    /// Login-type calls (Login, CompleteLogin, SignUp, activation, password reset) per client
    /// address and minute; more answer RESOURCE_EXHAUSTED before any password is hashed.
    #[arg(
        global = true,
        long,
        env = "ROSTER_LOGIN_RATE_PER_MINUTE",
        default_value = "120"
    )]
    pub login_rate_per_minute: String,
    /// Lifetime of "forgot password" links.
    #[arg(
        global = true,
        long,
        env = "ROSTER_PASSWORD_RESET_TTL",
        default_value = "1h"
    )]
    pub password_reset_ttl: String,
    /// How long the challenge of a two-factor login waits for its code.
    #[arg(
        global = true,
        long,
        env = "ROSTER_TWO_FACTOR_CHALLENGE_TTL",
        default_value = "5m"
    )]
    pub two_factor_challenge_ttl: String,
    /// How long events stay in the feed; an older cursor answers OUT_OF_RANGE.
    #[arg(
        global = true,
        long,
        env = "ROSTER_EVENT_RETENTION",
        default_value = "30days"
    )]
    pub event_retention: String,
    /// Networks webhook deliveries may reach although they are loopback, link-local or private
    /// (comma-separated CIDRs or addresses, e.g. `127.0.0.0/8,::1`); none by default.
    #[arg(
        global = true,
        long,
        env = "ROSTER_WEBHOOK_ALLOWED_NETWORKS",
        default_value = ""
    )]
    pub webhook_allowed_networks: String,
    /// How long a webhook delivery may take, connecting included.
    #[arg(
        global = true,
        long,
        env = "ROSTER_WEBHOOK_TIMEOUT",
        default_value = "10s"
    )]
    pub webhook_timeout: String,
    /// Wait before the first retry of a failed delivery; each further retry waits twice as long,
    /// at most an hour.
    #[arg(
        global = true,
        long,
        env = "ROSTER_WEBHOOK_RETRY_BASE",
        default_value = "5s"
    )]
    pub webhook_retry_base: String,
    /// An endpoint failing for this long without a success is disabled and the owner told.
    #[arg(
        global = true,
        long,
        env = "ROSTER_WEBHOOK_DISABLE_AFTER",
        default_value = "5days"
    )]
    pub webhook_disable_after: String,
    /// Users kept in each replica's read cache (about a kilobyte each): the bound of its memory.
    #[arg(
        global = true,
        long,
        env = "ROSTER_USER_CACHE_ENTRIES",
        default_value = "50000"
    )]
    pub user_cache_entries: String,
    /// Serve Prometheus metrics at `http://ADDRESS/metrics` (off when empty; e.g. `127.0.0.1:9464`).
    #[arg(global = true, long, env = "ROSTER_METRICS_LISTEN", default_value = "")]
    pub metrics_listen: String,
    /// Browser origins allowed to call roster over gRPC-Web (CORS), comma-separated
    /// (`https://app.example.com,http://localhost:3000`); none by default.
    #[arg(global = true, long, env = "ROSTER_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// Apply pending migrations when `serve` starts (`false` when a Job runs `roster migrate`
    /// first: `serve` then refuses a database that lacks any).
    #[arg(global = true, long, env = "ROSTER_MIGRATE", default_value = "true")]
    pub migrate: String,
}

/// The origins of ROSTER_CORS_ORIGINS, each `scheme://host[:port]`.
fn origins(value: &str) -> Result<Vec<String>, SettingError> {
    let bad = |reason: String| SettingError {
        env: "ROSTER_CORS_ORIGINS",
        flag: "cors-origins",
        reason,
    };
    let mut origins = Vec::new();
    for entry in value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let url = url::Url::parse(entry).map_err(|err| bad(format!("{entry:?}: {err}")))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.path() != "/"
            || url.query().is_some()
            || !url.username().is_empty()
        {
            return Err(bad(format!(
                "{entry:?}: an origin is scheme://host[:port], http or https, with no path"
            )));
        }
        origins.push(url.origin().ascii_serialization());
    }
    Ok(origins)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub cors_origins: Vec<String>,
    pub migrate: bool,
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub mail_url: url::Url,
    pub mail_from: lettre::message::Mailbox,
    pub public_url: String,
    pub log: String,
    pub log_format: LogFormat,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub activation_ttl: Duration,
    pub argon2: Argon2Settings,
    pub hash_concurrency: usize,
    pub max_message_bytes: usize,
    pub max_concurrent_requests: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub token_signing_key: Option<Secret>,
    pub lockout_threshold: u32,
    pub lockout_cooldown: Duration,
    pub login_rate_per_minute: u32,
    pub password_reset_ttl: Duration,
    pub two_factor_challenge_ttl: Duration,
    pub event_retention: Duration,
    pub webhook_allowed_networks: Vec<IpNet>,
    pub webhook_timeout: Duration,
    pub webhook_retry_base: Duration,
    pub webhook_disable_after: Duration,
    pub user_cache_entries: usize,
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {env} (--{flag}): {reason}")]
pub struct SettingError {
    pub env: &'static str,
    pub flag: &'static str,
    pub reason: String,
}

/// A comma-separated list of networks (CIDRs or single addresses).
fn networks(env: &'static str, flag: &'static str, text: &str) -> Result<Vec<IpNet>, SettingError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|err| SettingError {
                    env,
                    flag,
                    reason: format!("{entry:?}: {err}"),
                })
        })
        .collect()
}

fn parse<T: FromStr>(env: &'static str, flag: &'static str, text: &str) -> Result<T, SettingError>
where
    T::Err: std::fmt::Display,
{
    text.trim().parse().map_err(|err: T::Err| SettingError {
        env,
        flag,
        reason: format!("{text:?}: {err}"),
    })
}

fn duration(env: &'static str, flag: &'static str, text: &str) -> Result<Duration, SettingError> {
    let value = humantime::parse_duration(text.trim()).map_err(|err| SettingError {
        env,
        flag,
        reason: format!("{text:?}: {err} (e.g. 15m, 72h)"),
    })?;
    if value.is_zero() {
        return Err(SettingError {
            env,
            flag,
            reason: "must be longer than zero".into(),
        });
    }
    Ok(value)
}

fn positive<T: FromStr + PartialOrd + Default>(
    env: &'static str,
    flag: &'static str,
    text: &str,
) -> Result<T, SettingError>
where
    T::Err: std::fmt::Display,
{
    let value: T = parse(env, flag, text)?;
    if value <= T::default() {
        return Err(SettingError {
            env,
            flag,
            reason: format!("{text:?}: must be greater than zero"),
        });
    }
    Ok(value)
}

impl TryFrom<SettingsArgs> for Settings {
    type Error = SettingError;

    fn try_from(args: SettingsArgs) -> Result<Self, SettingError> {
        let database_url = args.database_url.trim().to_owned();
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|scheme| database_url.starts_with(scheme))
        {
            return Err(SettingError {
                env: "ROSTER_DATABASE_URL",
                flag: "database-url",
                reason: "must start with sqlite:, postgres: or postgresql:".into(),
            });
        }
        let mail_url: url::Url = parse("ROSTER_MAIL_URL", "mail-url", &args.mail_url)?;
        crate::domain::mail::MailTransport::from_url(&mail_url).map_err(|reason| SettingError {
            env: "ROSTER_MAIL_URL",
            flag: "mail-url",
            reason,
        })?;
        let listen: SocketAddr = parse("ROSTER_LISTEN", "listen", &args.listen)?;
        let public_url = match args.public_url.trim() {
            // roster's own pages: the links of the embedded default open in a browser as they are.
            "" if listen.ip().is_loopback() || listen.ip().is_unspecified() => {
                format!("http://localhost:{}", listen.port())
            }
            "" => format!("http://{listen}"),
            url => url.to_owned(),
        };
        let public_url: url::Url = parse("ROSTER_PUBLIC_URL", "public-url", &public_url)?;
        if !matches!(public_url.scheme(), "http" | "https") {
            return Err(SettingError {
                env: "ROSTER_PUBLIC_URL",
                flag: "public-url",
                reason: "must be an http:// or https:// URL".into(),
            });
        }
        let log_format = match args.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(SettingError {
                    env: "ROSTER_LOG_FORMAT",
                    flag: "log-format",
                    reason: format!("{other:?}: must be text or json"),
                });
            }
        };
        tracing_subscriber::EnvFilter::try_new(args.log.trim()).map_err(|err| SettingError {
            env: "ROSTER_LOG",
            flag: "log",
            reason: err.to_string(),
        })?;
        let argon2 = Argon2Settings {
            memory_kib: positive(
                "ROSTER_ARGON2_MEMORY_KIB",
                "argon2-memory-kib",
                &args.argon2_memory_kib,
            )?,
            iterations: positive(
                "ROSTER_ARGON2_ITERATIONS",
                "argon2-iterations",
                &args.argon2_iterations,
            )?,
            parallelism: positive(
                "ROSTER_ARGON2_PARALLELISM",
                "argon2-parallelism",
                &args.argon2_parallelism,
            )?,
        };
        argon2::Params::new(
            argon2.memory_kib,
            argon2.iterations,
            argon2.parallelism,
            None,
        )
        .map_err(|err| SettingError {
            env: "ROSTER_ARGON2_MEMORY_KIB",
            flag: "argon2-memory-kib",
            reason: err.to_string(),
        })?;
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2);
        let hash_concurrency = match &args.hash_concurrency {
            Some(text) => positive("ROSTER_HASH_CONCURRENCY", "hash-concurrency", text)?,
            None => cores,
        };
        let trusted_proxies = networks(
            "ROSTER_TRUSTED_PROXIES",
            "trusted-proxies",
            &args.trusted_proxies,
        )?;
        let webhook_allowed_networks = networks(
            "ROSTER_WEBHOOK_ALLOWED_NETWORKS",
            "webhook-allowed-networks",
            &args.webhook_allowed_networks,
        )?;
        let token_signing_key = match args.token_signing_key.filter(|key| !key.trim().is_empty()) {
            Some(key) if key.trim().len() < 32 => {
                return Err(SettingError {
                    env: "ROSTER_TOKEN_SIGNING_KEY",
                    flag: "token-signing-key",
                    reason: "must be at least 32 characters".into(),
                });
            }
            other => other.map(|key| Secret::new(key.trim())),
        };
        Ok(Self {
            listen,
            cors_origins: origins(&args.cors_origins)?,
            migrate: match args.migrate.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => {
                    return Err(SettingError {
                        env: "ROSTER_MIGRATE",
                        flag: "migrate",
                        reason: format!("{other:?}: must be true or false"),
                    });
                }
            },
            metrics_listen: match args.metrics_listen.trim() {
                "" => None,
                address => Some(parse("ROSTER_METRICS_LISTEN", "metrics-listen", address)?),
            },
            database_url: Secret::new(database_url),
            database_max_connections: positive(
                "ROSTER_DATABASE_MAX_CONNECTIONS",
                "database-max-connections",
                &args.database_max_connections,
            )?,
            mail_url,
            mail_from: parse("ROSTER_MAIL_FROM", "mail-from", &args.mail_from)?,
            public_url: public_url.as_str().trim_end_matches('/').to_owned(),
            log: args.log.trim().to_owned(),
            log_format,
            access_token_ttl: duration(
                "ROSTER_ACCESS_TOKEN_TTL",
                "access-token-ttl",
                &args.access_token_ttl,
            )?,
            refresh_token_ttl: duration(
                "ROSTER_REFRESH_TOKEN_TTL",
                "refresh-token-ttl",
                &args.refresh_token_ttl,
            )?,
            activation_ttl: duration(
                "ROSTER_ACTIVATION_TTL",
                "activation-ttl",
                &args.activation_ttl,
            )?,
            argon2,
            hash_concurrency,
            max_message_bytes: positive(
                "ROSTER_MAX_MESSAGE_BYTES",
                "max-message-bytes",
                &args.max_message_bytes,
            )?,
            max_concurrent_requests: positive(
                "ROSTER_MAX_CONCURRENT_REQUESTS",
                "max-concurrent-requests",
                &args.max_concurrent_requests,
            )?,
            trusted_proxies,
            token_signing_key,
            lockout_threshold: positive(
                "ROSTER_LOCKOUT_THRESHOLD",
                "lockout-threshold",
                &args.lockout_threshold,
            )?,
            lockout_cooldown: duration(
                "ROSTER_LOCKOUT_COOLDOWN",
                "lockout-cooldown",
                &args.lockout_cooldown,
            )?,
            login_rate_per_minute: positive(
                "ROSTER_LOGIN_RATE_PER_MINUTE",
                "login-rate-per-minute",
                &args.login_rate_per_minute,
            )?,
            password_reset_ttl: duration(
                "ROSTER_PASSWORD_RESET_TTL",
                "password-reset-ttl",
                &args.password_reset_ttl,
            )?,
            two_factor_challenge_ttl: duration(
                "ROSTER_TWO_FACTOR_CHALLENGE_TTL",
                "two-factor-challenge-ttl",
                &args.two_factor_challenge_ttl,
            )?,
            event_retention: duration(
                "ROSTER_EVENT_RETENTION",
                "event-retention",
                &args.event_retention,
            )?,
            webhook_allowed_networks,
            webhook_timeout: duration(
                "ROSTER_WEBHOOK_TIMEOUT",
                "webhook-timeout",
                &args.webhook_timeout,
            )?,
            webhook_retry_base: duration(
                "ROSTER_WEBHOOK_RETRY_BASE",
                "webhook-retry-base",
                &args.webhook_retry_base,
            )?,
            webhook_disable_after: duration(
                "ROSTER_WEBHOOK_DISABLE_AFTER",
                "webhook-disable-after",
                &args.webhook_disable_after,
            )?,
            user_cache_entries: positive(
                "ROSTER_USER_CACHE_ENTRIES",
                "user-cache-entries",
                &args.user_cache_entries,
            )?,
        })
    }
}

impl Settings {
    /// Defaults with the given overrides applied, as if read from the environment; for tests and
    /// embedding.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, SettingError> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: SettingsArgs,
        }
        let mut argv = vec!["roster".to_owned()];
        for (flag, value) in pairs {
            argv.push(format!("--{flag}={value}"));
        }
        let parsed = Only::try_parse_from(argv).map_err(|err| SettingError {
            env: "-",
            flag: "-",
            reason: err.to_string(),
        })?;
        Settings::try_from(parsed.settings)
    }
}
