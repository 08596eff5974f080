//! Starts the real server in-process on `127.0.0.1:0` with a fresh database and returns typed
//! clients, a clock the test controls and the folder the server writes mail into.
//!
//! The database is a fresh SQLite file, or, when `ROSTER_TEST_DATABASE_URL` names a PostgreSQL
//! server (`postgres://postgres@127.0.0.1:55432/postgres`), a fresh database created on it for
//! each test.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use roster::{
    api::pb::{
        self, activity_service_client::ActivityServiceClient,
        auth_service_client::AuthServiceClient, session_service_client::SessionServiceClient,
    },
    config::Settings,
    model::Clock,
};
use sea_orm::{ConnectionTrait, Database};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Request, Status,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

/// A password that satisfies the policy.
pub const PASSWORD: &str = "Corr3ct-Horse-Battery";

/// How long helpers wait for something the server does in the background (mail).
/// Generous, because CI machines are small and busy; a passing test never waits this long.
const WAIT: Duration = Duration::from_secs(10);

/// A clock the test moves: it runs with the wall clock from the moment it was made, plus
/// whatever the test added with [`ManualClock::advance`]. It ticks (rather than stands still)
/// so that instants taken one after another differ as they do in production.
#[derive(Debug)]
pub struct ManualClock {
    offset: Mutex<chrono::Duration>,
}

impl ManualClock {
    /// A clock that reads the real time until it is advanced.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            offset: Mutex::new(chrono::Duration::zero()),
        })
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("duration fits");
        *self.offset.lock().expect("clock lock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now() + *self.offset.lock().expect("clock lock");
        DateTime::from_timestamp_millis(now.timestamp_millis()).expect("in range")
    }
}

/// Where the test's data lives; shared by the servers a test starts one after another.
struct Backing {
    /// Temporary folder: the SQLite file (when used) and the mail folder.
    dir: tempfile::TempDir,
    database_url: String,
    /// The PostgreSQL server's admin URL and the test's database on it, dropped at the end.
    postgres: Option<(String, String)>,
}

impl Drop for Backing {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Best effort, on a thread of its own: Drop cannot await, and the test's runtime may be
        // single-threaded. FORCE ends the connections of a server that is still stopping.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(admin_url.as_str()).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A running server and clients connected to it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub auth: AuthServiceClient<Channel>,
    pub health: HealthClient<Channel>,
    pub channel: Channel,
    /// The folder of `.eml` files the server writes.
    pub mail_dir: PathBuf,
    pub clock: Arc<ManualClock>,
    /// Whether the database is PostgreSQL (else SQLite).
    pub postgres: bool,
    extra: Vec<(String, String)>,
    backing: Arc<Backing>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The owner of a freshly signed-up and activated account.
#[derive(Debug, Clone)]
pub struct Account {
    pub tenant_id: String,
    pub tenant_slug: String,
    pub user_id: String,
    pub email: String,
    pub password: String,
}

/// Starts a server with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts a server with the test defaults and `extra` settings (`("access-token-ttl", "1m")`).
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let (backing, is_postgres) = spawn_backing().await;
    let extra = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    start(backing, ManualClock::new(), extra, is_postgres).await
}

/// Starts `count` servers at once on one fresh database (the migrations of all of them race),
/// as a rollout onto a new database does; every one of them must come up.
pub async fn spawn_replicas_at_once(count: usize) -> Vec<TestApp> {
    let (backing, is_postgres) = spawn_backing().await;
    let clock = ManualClock::new();
    futures::future::join_all(
        (0..count).map(|_| start(backing.clone(), clock.clone(), Vec::new(), is_postgres)),
    )
    .await
}

/// An empty database of its own, no server on it: its URL, and what removes it when dropped.
pub async fn empty_database() -> (impl Sized, String) {
    let (backing, _) = spawn_backing().await;
    let url = backing.database_url.clone();
    (backing, url)
}

/// A fresh database (SQLite file or PostgreSQL database) and whether it is PostgreSQL.
async fn spawn_backing() -> (Arc<Backing>, bool) {
    init_logging();
    let dir = tempfile::tempdir().expect("temp dir");
    let (database_url, postgres) = match std::env::var("ROSTER_TEST_DATABASE_URL") {
        Ok(admin) if !admin.trim().is_empty() => {
            let admin = admin.trim().to_owned();
            let (url, name) = fresh_postgres_database(&admin).await;
            (url, Some((admin, name)))
        }
        _ => (
            format!("sqlite://{}", dir.path().join("roster.db").display()),
            None,
        ),
    };
    let is_postgres = postgres.is_some();
    (
        Arc::new(Backing {
            dir,
            database_url,
            postgres,
        }),
        is_postgres,
    )
}

/// A PostgreSQL server reached through a TCP proxy inside the test, which can drop every
/// connection and refuse new ones (the database going away) and let them through again.
pub struct DatabaseProxy {
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl DatabaseProxy {
    /// Drops every open connection and refuses new ones until [`DatabaseProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for DatabaseProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a server whose database (PostgreSQL only: `None` on SQLite) is reached through a
/// [`DatabaseProxy`].
pub async fn spawn_app_behind_proxy() -> Option<(TestApp, DatabaseProxy)> {
    let (backing, is_postgres) = spawn_backing().await;
    if !is_postgres {
        return None;
    }
    let mut url = url::Url::parse(&backing.database_url).expect("database URL");
    let target = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy addr").port();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (cut, cuts) = tokio::sync::watch::channel(0u64);
    let task = {
        let up = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cuts = cuts.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    cuts.borrow_and_update();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        })
    };
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(port)).expect("port");
    // The server's backing takes over the database (dropped at the end) with the proxy's URL.
    let mut original = Arc::try_unwrap(backing)
        .ok()
        .expect("the backing is not shared yet");
    let proxied = Arc::new(Backing {
        dir: std::mem::replace(&mut original.dir, tempfile::tempdir().expect("temp dir")),
        database_url: url.to_string(),
        postgres: original.postgres.take(),
    });
    let app = start(proxied, ManualClock::new(), Vec::new(), true).await;
    Some((app, DatabaseProxy { up, cut, task }))
}

/// Logs of the server go to the test output when `ROSTER_TEST_LOG` is set (`debug`, `info` ...).
fn init_logging() {
    if let Ok(filter) = std::env::var("ROSTER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Creates `t_<uuid>` on the server that `admin_url` points at; returns its URL and name.
async fn fresh_postgres_database(admin_url: &str) -> (String, String) {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(admin_url)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to ROSTER_TEST_DATABASE_URL: {err}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let mut url = url::Url::parse(admin_url).expect("ROSTER_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    (url.to_string(), name)
}

async fn start(
    backing: Arc<Backing>,
    clock: Arc<ManualClock>,
    extra: Vec<(String, String)>,
    postgres: bool,
) -> TestApp {
    let mail_dir = backing.dir.path().join("mail");
    let mail_url = format!("file://{}", mail_dir.display());
    let mut pairs: Vec<(&str, &str)> = vec![
        ("database-url", &backing.database_url),
        ("database-max-connections", "4"),
        ("mail-url", &mail_url),
        // Cheap hashing keeps the suite fast; the parameters are not what is under test.
        ("argon2-memory-kib", "256"),
        ("argon2-iterations", "1"),
        ("log", "warn"),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let settings = Settings::from_pairs(&pairs).expect("test settings are valid");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server_clock: Arc<dyn Clock> = clock.clone();
    let server = tokio::spawn(roster::server::serve(
        settings,
        server_clock,
        listener,
        async move {
            let _ = shutdown_rx.await;
        },
    ));

    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        // A bound for a hung call, not a measure: a debug-build import of 45,000 rows on
        // PostgreSQL takes 7-10 s alone and went past 30 s once with the whole suite running.
        .timeout(Duration::from_secs(90))
        .connect_lazy();
    let mut app = TestApp {
        addr,
        auth: AuthServiceClient::new(channel.clone()),
        health: HealthClient::new(channel.clone()),
        channel,
        mail_dir,
        clock,
        postgres,
        extra,
        backing,
        shutdown: Some(shutdown_tx),
        server: Some(server),
    };
    app.wait_until_serving().await;
    app
}

impl TestApp {
    /// Waits until health answers SERVING; fails with the server's error if it stopped.
    async fn wait_until_serving(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.server.as_ref().is_some_and(|s| s.is_finished()) {
                let result = self.server.take().expect("server handle").await;
                panic!("the server stopped while starting: {result:?}");
            }
            let check = tokio::time::timeout(
                Duration::from_secs(2),
                self.health.check(HealthCheckRequest {
                    service: String::new(),
                }),
            )
            .await;
            if let Ok(Ok(response)) = check
                && response.into_inner().status == ServingStatus::Serving as i32
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not become SERVING within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's clock plus `by`, as a protobuf timestamp.
    pub fn clock_now_plus(&self, by: Duration) -> prost_types::Timestamp {
        let at = self.clock.now() + chrono::Duration::from_std(by).expect("duration fits");
        prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }
    }

    /// The server's database.
    pub fn database_url(&self) -> &str {
        &self.backing.database_url
    }

    /// A connection of its own to the server's database, to check what the RPCs cannot show.
    pub async fn database(&self) -> sea_orm::DatabaseConnection {
        Database::connect(self.backing.database_url.as_str())
            .await
            .expect("connect to the test database")
    }

    /// A client of AuthService (cheap: clients share the channel).
    pub fn auth(&self) -> AuthServiceClient<Channel> {
        self.auth.clone()
    }

    /// Stops the server gracefully and waits until it has released the database.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(20), server).await {
                Ok(joined) => joined
                    .expect("server task")
                    .expect("server stopped cleanly"),
                Err(_) => panic!("the server did not stop within 20 s"),
            }
        }
    }

    /// Ends the server abruptly, as a crash would: no graceful shutdown, nothing flushed.
    pub fn kill(&mut self) {
        self.shutdown.take();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Stops this server and starts a new one on the same database, mail folder and clock (on a
    /// new port, with new clients).
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        start(
            self.backing.clone(),
            self.clock.clone(),
            self.extra.clone(),
            self.postgres,
        )
        .await
    }

    /// Starts a second server (a replica) on the same database, mail folder and clock, with the
    /// same settings; this one keeps running.
    pub async fn replica(&self) -> TestApp {
        start(
            self.backing.clone(),
            self.clock.clone(),
            self.extra.clone(),
            self.postgres,
        )
        .await
    }

    /// Signs up an account with [`PASSWORD`] and activates its owner through the mailed link.
    pub async fn sign_up_and_activate(&self, account_name: &str, email: &str) -> Account {
        self.sign_up_and_activate_as(account_name, email, PASSWORD)
            .await
    }

    /// Signs up an account with `password` and activates its owner through the mailed link.
    pub async fn sign_up_and_activate_as(
        &self,
        account_name: &str,
        email: &str,
        password: &str,
    ) -> Account {
        let before = self.mails_to_now(email).len();
        let account = self.sign_up_as(account_name, email, password).await;
        let mail = self
            .wait_for_mails_to(email, before + 1)
            .await
            .pop()
            .expect("the activation message");
        let token = token_from_mail(&mail);
        self.auth()
            .activate_account(pb::ActivateAccountRequest {
                token,
                password: String::new(),
                ..Default::default()
            })
            .await
            .expect("activation succeeds");
        account
    }

    /// Signs up an account (its owner stays PENDING_CONFIRMATION) with [`PASSWORD`].
    pub async fn sign_up(&self, account_name: &str, email: &str) -> Account {
        self.sign_up_as(account_name, email, PASSWORD).await
    }

    /// Signs up an account with `password` (its owner stays PENDING_CONFIRMATION).
    pub async fn sign_up_as(&self, account_name: &str, email: &str, password: &str) -> Account {
        let response = self
            .auth()
            .sign_up(sign_up_request(account_name, email, password))
            .await
            .expect("sign-up succeeds")
            .into_inner();
        Account {
            tenant_id: response.tenant_id,
            tenant_slug: response.tenant_slug,
            user_id: response.user_id,
            email: email.trim().to_lowercase(),
            password: password.to_owned(),
        }
    }

    /// Calls Login.
    pub async fn login(
        &self,
        tenant: &str,
        login: &str,
        password: &str,
    ) -> Result<pb::LoginResponse, Status> {
        self.auth()
            .login(pb::LoginRequest {
                tenant: tenant.to_owned(),
                login: login.to_owned(),
                password: password.to_owned(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Logs the account's owner in by slug and returns the tokens.
    pub async fn login_owner(&self, account: &Account) -> pb::LoginResponse {
        self.login(&account.tenant_slug, &account.email, &account.password)
            .await
            .expect("owner logs in")
    }

    /// Calls WhoAmI with `access_token`.
    pub async fn who_am_i(&self, access_token: &str) -> Result<pb::WhoAmIResponse, Status> {
        self.auth()
            .who_am_i(authed(pb::WhoAmIRequest::default(), access_token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Calls ValidateToken.
    pub async fn validate(&self, access_token: &str) -> pb::ValidateTokenResponse {
        self.auth()
            .validate_token(pb::ValidateTokenRequest {
                token: access_token.to_owned(),
                ..Default::default()
            })
            .await
            .expect("ValidateToken answers")
            .into_inner()
    }

    /// Calls RefreshSession.
    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::LoginResponse, Status> {
        self.auth()
            .refresh_session(pb::RefreshSessionRequest {
                refresh_token: refresh_token.to_owned(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every message written to `email` so far, oldest first, waiting up to 10 s for the first.
    pub async fn mails_to(&self, email: &str) -> Vec<String> {
        self.wait_for_mails_to(email, 1).await
    }

    /// Waits up to 10 s until at least `count` messages to `email` exist; returns all of them,
    /// oldest first.
    pub async fn wait_for_mails_to(&self, email: &str, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = read_mails_to(&self.mail_dir, email);
            if found.len() >= count {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} message(s) to {email} within {WAIT:?}, found {}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The newest message to `email`, waiting up to 10 s for one to arrive.
    pub async fn latest_mail_to(&self, email: &str) -> String {
        self.mails_to(email)
            .await
            .pop()
            .expect("at least one message")
    }

    /// Waits up to 30 s until at least `count` messages exist in all; returns the recipients of
    /// every message.
    pub async fn wait_for_mail_count(&self, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = mail_files(&self.mail_dir);
            if found.len() >= count {
                return found
                    .into_iter()
                    .filter_map(|path| std::fs::read_to_string(path).ok())
                    .filter_map(|text| header(&text, "to"))
                    .collect();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} message(s) within 30 s, found {}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many messages exist right now.
    pub fn mail_count(&self) -> usize {
        mail_files(&self.mail_dir).len()
    }

    /// Messages to `email` present right now, without waiting.
    pub fn mails_to_now(&self, email: &str) -> Vec<String> {
        read_mails_to(&self.mail_dir, email)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The message files in `dir`, oldest first (file names are UUIDv7s).
fn mail_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    files.sort();
    files
}

/// The messages in `dir` addressed to `email`, oldest first.
fn read_mails_to(dir: &Path, email: &str) -> Vec<String> {
    let email = email.to_lowercase();
    mail_files(dir)
        .into_iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter(|text| {
            header(text, "to").is_some_and(|to| {
                to.to_lowercase()
                    .split([',', '<', '>', ' '])
                    .any(|part| part == email)
            })
        })
        .collect()
}

/// The value of the first header `name` (case-insensitive) of a raw message, unfolded.
pub fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next().unwrap_or(message);
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(current) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                current.push_str(line);
                continue;
            }
            break;
        }
        if let Some((key, rest)) = line.split_once(':')
            && key.trim().eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_owned());
        }
    }
    value
}

/// The body of a raw message (after the blank line).
pub fn body(message: &str) -> &str {
    message
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The link in a message's body that carries `token=`.
pub fn link_from_mail(message: &str) -> String {
    body(message)
        .split_whitespace()
        .find(|word| word.contains("token="))
        .unwrap_or_else(|| panic!("no link with token= in:\n{message}"))
        .to_owned()
}

/// The token at the end of the link in a message's body.
pub fn token_from_mail(message: &str) -> String {
    let link = link_from_mail(message);
    let (_, token) = link.split_once("token=").expect("token=");
    token
        .split(['&', '#'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `message` with `authorization: Bearer <access_token>`.
pub fn authed<T>(message: T, access_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {access_token}")
            .parse()
            .expect("ascii token"),
    );
    request
}

/// A sign-up request with the given values and names "Ann Owner".
pub fn sign_up_request(account_name: &str, email: &str, password: &str) -> pb::SignUpRequest {
    pb::SignUpRequest {
        account_name: account_name.to_owned(),
        first_name: "Ann".to_owned(),
        last_name: "Owner".to_owned(),
        email: email.to_owned(),
        password: password.to_owned(),
        ..Default::default()
    }
}

/// The `google.rpc.ErrorInfo` reason of `status`, if any.
pub fn reason(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// The fields named by the `google.rpc.BadRequest` of `status`, sorted.
pub fn bad_fields(status: &Status) -> Vec<String> {
    let mut fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default();
    fields.sort();
    fields
}

/// Unwraps the error of `result`, checking its code; returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "unexpected status: {status:?} (reason {:?})",
                reason(&status)
            );
            status
        }
    }
}

/// Checks the code and the `ErrorInfo` reason (domain `roster`) of a failed call.
#[track_caller]
pub fn expect_reason<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    expected_reason: &str,
) -> Status {
    let status = expect_code(result, code);
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, expected_reason, "reason of {status:?}");
    assert_eq!(info.domain, "roster", "domain of {status:?}");
    status
}

/// Checks that a failed call is INVALID_ARGUMENT naming exactly `fields` (in any order).
#[track_caller]
pub fn expect_bad_fields<T: std::fmt::Debug>(result: Result<T, Status>, fields: &[&str]) -> Status {
    let status = expect_code(result, Code::InvalidArgument);
    let mut expected: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(
        bad_fields(&status),
        expected,
        "field violations of {status:?}"
    );
    status
}
/// Waits up to `within` for `check` to pass, polling.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A SessionService client on the app's channel.
pub fn sessions(app: &TestApp) -> SessionServiceClient<Channel> {
    SessionServiceClient::new(app.channel.clone())
}

/// An ActivityService client on the app's channel.
pub fn activity(app: &TestApp) -> ActivityServiceClient<Channel> {
    ActivityServiceClient::new(app.channel.clone())
}

/// Calls ListSessions.
pub async fn list_sessions(
    app: &TestApp,
    token: &str,
    request: pb::ListSessionsRequest,
) -> Result<pb::ListSessionsResponse, Status> {
    sessions(app)
        .list_sessions(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// The activity records matching `filter` (one large page), newest first.
pub async fn list_activity(
    app: &TestApp,
    token: &str,
    filter: pb::ActivityFilter,
) -> Result<Vec<pb::ActivityRecord>, Status> {
    activity(app)
        .list_activity(authed(
            pb::ListActivityRequest {
                filter: Some(filter),
                page_size: 1000,
                page_token: String::new(),
            },
            token,
        ))
        .await
        .map(|response| response.into_inner().records)
}

/// A filter on actions.
pub fn actions(filter: &[&str]) -> pb::ActivityFilter {
    pb::ActivityFilter {
        actions: filter.iter().map(|a| (*a).to_owned()).collect(),
        ..Default::default()
    }
}
