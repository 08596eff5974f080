//! Builds and runs the tonic server: services, health, reflection, limits, tracing, background
//! tasks and graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use base64::Engine;
use futures::StreamExt as _;
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    api::{
        ActivityApi, ApiContext, AttemptLimiter, AuthApi, EventApi, RoleApi, SecurityApi,
        ServiceAccountApi, SessionApi, TeamApi, TwoFactorApi, UserApi, WebhookApi, pb,
    },
    config::Settings,
    domain::{
        App, Policies,
        activity::ActivityFeed,
        lockout::LoginGuard,
        mail::{MailTransport, OutboxSender},
        passwords::PasswordHasher,
        replication::{self, PostgresReplication},
        tokens::{Revocations, TokenIssuer, random_secret},
    },
    model::Clock,
    store::{self, Store},
};

/// A connection that tells HTTP/2 it has no vectored writes, so that h2 copies every frame under
/// 1 KiB into its write buffer, where the answers of many calls leave in one write. With vectored
/// writes h2 copies only frames under 256 bytes: a larger answer (a ValidateToken principal is
/// about 600 bytes) has to go out before the next frame may be buffered, one system call per
/// answer on both ends. Copying a frame is cheaper than the write it saves; frames of 1 KiB or
/// more (imports, large pages) still go out without a copy.
struct CopiedWrites(tokio::net::TcpStream);

impl tokio::io::AsyncRead for CopiedWrites {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CopiedWrites {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl tonic::transport::server::Connected for CopiedWrites {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

/// Names of the services reported by gRPC health.
const SERVICES: &[&str] = &[
    "roster.v1.AuthService",
    "roster.v1.UserService",
    "roster.v1.TeamService",
    "roster.v1.RoleService",
    "roster.v1.TwoFactorService",
    "roster.v1.SessionService",
    "roster.v1.ActivityService",
    "roster.v1.SecurityService",
    "roster.v1.EventService",
    "roster.v1.ServiceAccountService",
    "roster.v1.WebhookService",
];

/// Connects to the database, applies migrations and returns the store.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(
        settings.database_url.expose(),
        settings.database_max_connections,
    )
    .await?;
    if settings.migrate {
        store.migrate().await?;
        return Ok(store);
    }
    // Migrations are another's job (a Kubernetes Job running `roster migrate`): serve only a
    // schema this build knows all of.
    let pending = store.pending_migrations().await?;
    if let Some(first) = pending.first() {
        anyhow::bail!(
            "the database lacks {} migration(s) of this version (the first: {first}); run \
             `roster migrate`, or let serve migrate (ROSTER_MIGRATE=true)",
            pending.len()
        );
    }
    Ok(store)
}

fn chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Builds the application: store, keys, revocation list seeded from the database, hasher.
pub async fn build_app(
    settings: &Settings,
    store: Store,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<App> {
    let now = clock.now();
    let key = match &settings.token_signing_key {
        Some(key) => key.expose().as_bytes().to_vec(),
        None => {
            let stored = store::keys::get_or_create(
                store.db(),
                "access-token-signing",
                random_secret(),
                now,
            )
            .await?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(stored)?
        }
    };
    let access_ttl = chrono(settings.access_token_ttl);
    let revocations = Arc::new(Revocations::default());
    // Revocations younger than an access token must survive a restart.
    replication::load_revocations(&store, &revocations, now - access_ttl, now).await?;
    let app = App {
        tokens: TokenIssuer::new(key, access_ttl, revocations)?,
        passwords: PasswordHasher::new(settings.argon2, settings.hash_concurrency)?,
        policies: Arc::new(Policies {
            refresh_ttl: chrono(settings.refresh_token_ttl),
            activation_ttl: chrono(settings.activation_ttl),
            public_url: settings.public_url.clone(),
            lockout_threshold: settings.lockout_threshold,
            lockout_cooldown: chrono(settings.lockout_cooldown),
            password_reset_ttl: chrono(settings.password_reset_ttl),
            challenge_ttl: chrono(settings.two_factor_challenge_ttl),
            event_retention: chrono(settings.event_retention),
            webhooks: crate::domain::webhooks::WebhookRules {
                allowed_networks: settings.webhook_allowed_networks.clone(),
                timeout: settings.webhook_timeout,
                retry_base: settings.webhook_retry_base,
                disable_after: chrono(settings.webhook_disable_after),
            },
        }),
        store,
        clock,
        mail_wake: Arc::new(Notify::new()),
        invitation_wake: Arc::new(Notify::new()),
        feed: Arc::new(ActivityFeed::default()),
        guard: Arc::new(LoginGuard::default()),
        cache: Arc::new(crate::domain::cache::ReadCache::new(
            settings.user_cache_entries,
        )),
        events: Arc::default(),
        api_keys: Arc::default(),
    };
    // Role changes younger than an access token must keep overriding the roles inside tokens.
    store::users::forget_role_changes_before(app.store.db(), now - access_ttl).await?;
    replication::catch_up_on_grants(&app, app.tokens.revocations(), now - access_ttl).await?;
    Ok(app)
}

/// Serves on `listener` until `shutdown` resolves, then finishes in-flight calls and stops the
/// background tasks.
pub async fn serve(
    settings: Settings,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let app = build_app(&settings, store.clone(), clock.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);

    // Replicas sharing PostgreSQL hear each other's revocations and activity; the listener is
    // listening before the server serves, so nothing written after that is missed.
    let replication_task = if store.is_postgres() {
        let replication =
            PostgresReplication::connect(&app, settings.database_url.expose()).await?;
        tokio::spawn(replication.run(app.clone(), stop_rx.clone()))
    } else {
        tokio::spawn(replication::tail_sqlite(app.clone(), stop_rx.clone()))
    };
    // Live watches end as soon as shutdown begins, so that they do not hold it up.
    let feed = app.feed.clone();
    let shutdown = async move {
        shutdown.await;
        feed.close();
    };

    let transport = MailTransport::from_url(&settings.mail_url).map_err(anyhow::Error::msg)?;
    let sender = OutboxSender {
        store: store.clone(),
        transport,
        from: settings.mail_from.clone(),
        clock: clock.clone(),
        wake: app.mail_wake.clone(),
        max_attempts: 10,
    };
    let sender_task = tokio::spawn(sender.run(stop_rx.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    let health_task = tokio::spawn(watch_database(
        store.clone(),
        health.clone(),
        stop_rx.clone(),
    ));
    let prune_task = tokio::spawn(prune_revocations(app.clone(), stop_rx.clone()));
    let invitation_task = tokio::spawn(send_invitations(app.clone(), stop_rx.clone()));
    let key_use_task = tokio::spawn(crate::domain::service_accounts::record_key_use(
        app.clone(),
        stop_rx.clone(),
    ));
    let events_task = tokio::spawn(crate::domain::events::prune_events(
        app.clone(),
        stop_rx.clone(),
    ));
    let webhooks_task = tokio::spawn(crate::domain::webhooks::deliver_webhooks(
        app.clone(),
        stop_rx.clone(),
    ));
    let unfinished_imports_task =
        tokio::spawn(undo_unfinished_imports(app.clone(), stop_rx.clone()));
    // In the background: usually there is nothing in clear (a partial index tells at once).
    tokio::spawn(seal_clear_profile_secrets(app.clone()));

    let (_gauges, gauges_task) = crate::metrics::observe(&app, stop_rx.clone());
    let metrics_task = match settings.metrics_listen {
        Some(address) => {
            let listener = TcpListener::bind(address).await.map_err(|err| {
                anyhow::anyhow!("ROSTER_METRICS_LISTEN {address}: cannot listen: {err}")
            })?;
            // The registry telemetry::init made; a server started without it (in-process tests)
            // serves an empty one.
            let registry = crate::telemetry::registry()
                .unwrap_or_else(|| Box::leak(Box::new(prometheus::Registry::new())));
            tracing::info!(listen = %listener.local_addr()?, "metrics at /metrics");
            Some(tokio::spawn(crate::metrics::serve_metrics(
                listener,
                registry,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let ctx = ApiContext {
        app,
        trusted_proxies: Arc::new(settings.trusted_proxies.clone()),
        attempts: Arc::new(AttemptLimiter::new(settings.login_rate_per_minute)),
    };
    let limiter_task = tokio::spawn(prune_attempts(ctx.clone(), stop_rx.clone()));
    let limit = settings.max_message_bytes;
    let auth = pb::auth_service_server::AuthServiceServer::new(AuthApi::new(ctx.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let users = pb::user_service_server::UserServiceServer::new(UserApi::new(ctx.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let teams = pb::team_service_server::TeamServiceServer::new(TeamApi::new(ctx.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let roles = pb::role_service_server::RoleServiceServer::new(RoleApi::new(ctx.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let two_factor =
        pb::two_factor_service_server::TwoFactorServiceServer::new(TwoFactorApi::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
    let sessions =
        pb::session_service_server::SessionServiceServer::new(SessionApi::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
    let activity =
        pb::activity_service_server::ActivityServiceServer::new(ActivityApi::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
    let security =
        pb::security_service_server::SecurityServiceServer::new(SecurityApi::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
    let service_accounts = pb::service_account_service_server::ServiceAccountServiceServer::new(
        ServiceAccountApi::new(ctx.clone()),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let events = pb::event_service_server::EventServiceServer::new(EventApi::new(ctx.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let webhooks =
        pb::webhook_service_server::WebhookServiceServer::new(WebhookApi::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);

    tracing::info!(listen = %listener.local_addr()?, "roster serving");
    let cors = cors(&settings.cors_origins);
    let result = tonic::transport::Server::builder()
        // Browsers speak gRPC-Web over HTTP/1.1; the pages are plain HTTP/1.1 GETs.
        .accept_http1(true)
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            settings.max_concurrent_requests,
        ))
        .layer(tower::util::option_layer(cors))
        .layer(crate::api::pages::PagesLayer)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(crate::api::observe::RpcLayer)
        .layer(tower::util::MapResponseLayer::new(
            crate::api::client_errors_as_client_errors,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(users)
        .add_service(teams)
        .add_service(roles)
        .add_service(two_factor)
        .add_service(sessions)
        .add_service(activity)
        .add_service(security)
        .add_service(events)
        .add_service(service_accounts)
        .add_service(webhooks)
        // Server::tcp_nodelay does not reach an incoming stream we bind ourselves: without
        // TCP_NODELAY small responses wait for the peer's delayed ACK (about 40 ms each).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(|stream| stream.map(CopiedWrites)),
            shutdown,
        )
        .await;

    tracing::info!("roster stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(
        sender_task,
        health_task,
        prune_task,
        invitation_task,
        events_task,
        key_use_task,
        webhooks_task,
        unfinished_imports_task,
        replication_task,
        limiter_task,
        gauges_task
    );
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    store.close().await;
    result.map_err(Into::into)
}

/// CORS for gRPC-Web from the origins ROSTER_CORS_ORIGINS names (none: no CORS answers, so only
/// same-origin pages, like roster's own, call it from a browser).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use http::{HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let header = HeaderName::from_static;
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers([
                header("content-type"),
                header("x-grpc-web"),
                header("x-user-agent"),
                header("grpc-timeout"),
                header("authorization"),
                header("traceparent"),
                header("tracestate"),
            ])
            .expose_headers([
                header("grpc-status"),
                header("grpc-message"),
                header("grpc-status-details-bin"),
            ])
            .max_age(Duration::from_secs(24 * 3600)),
    )
}

/// Reflection over every served service, both reflection versions included (grpcurl and Python's
/// client speak v1alpha, newer clients v1).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for service in SERVICES {
        health.set_service_status(*service, status).await;
    }
}

/// Reports NOT_SERVING while the database cannot be reached, SERVING again when it can.
async fn watch_database(store: Store, health: HealthReporter, mut stop: watch::Receiver<bool>) {
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        let reachable = tokio::time::timeout(Duration::from_secs(2), store.ping())
            .await
            .unwrap_or(false);
        if reachable != serving {
            serving = reachable;
            if reachable {
                tracing::info!("database reachable again; serving");
                set_health(&health, ServingStatus::Serving).await;
            } else {
                tracing::warn!("database unreachable; not serving");
                set_health(&health, ServingStatus::NotServing).await;
            }
        }
    }
}

/// Forgets revocations of tokens that have expired anyway.
async fn prune_revocations(app: App, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.changed() => return,
        }
        let now = app.clock.now();
        let horizon = now - app.tokens.access_ttl() - chrono::Duration::seconds(5);
        app.tokens.revocations().prune(horizon);
        app.guard.prune(now, app.policies.lockout_cooldown);
    }
}

/// Makes the tokens and messages of imports' invitation batches: woken by an import, and every
/// few seconds for batches that a stopped replica left unfinished.
async fn send_invitations(app: App, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = || *stop.borrow();
        match app.send_invitation_batches(stopping).await {
            Ok(0) => {}
            Ok(made) => tracing::info!(made, "invitation emails queued"),
            Err(err) => tracing::warn!(error = %err, "invitation batch pass failed"),
        }
        tokio::select! {
            _ = app.invitation_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Deletes the users of imports stopped between their two commits (see `domain::import`): at
/// start, and every half minute for those of a replica that stopped meanwhile.
async fn undo_unfinished_imports(app: App, mut stop: watch::Receiver<bool>) {
    loop {
        match app.undo_unfinished_imports().await {
            Ok(0) => {}
            Ok(deleted) => tracing::warn!(deleted, "unfinished imports undone"),
            Err(err) => tracing::warn!(error = %err, "the pass over unfinished imports failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Seals the Dialer secrets that older versions stored in clear (see `domain::sealing`).
async fn seal_clear_profile_secrets(app: App) {
    match app.seal_clear_profile_secrets().await {
        Ok(0) => {}
        Ok(sealed) => tracing::info!(sealed, "Dialer secrets stored in clear were sealed"),
        Err(err) => {
            tracing::warn!(error = %err, "sealing the Dialer secrets stored in clear failed")
        }
    }
}

/// Forgets the rate-limit state of addresses that have been quiet.
async fn prune_attempts(ctx: ApiContext, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.changed() => return,
        }
        ctx.attempts.prune();
    }
}
