//! Builds and runs the tonic server: services, health, reflection, limits, tracing, background
//! tasks and graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use base64::Engine;
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::trace::TraceLayer;

use crate::{
    api::{ApiContext, AuthApi, UserApi, pb},
    config::Settings,
    domain::{
        App, Policies,
        mail::{MailTransport, OutboxSender},
        passwords::PasswordHasher,
        tokens::{Revocations, TokenIssuer, random_secret},
    },
    model::Clock,
    store::{self, Store},
};

/// Names of the services reported by gRPC health.
const SERVICES: &[&str] = &["roster.v1.AuthService", "roster.v1.UserService"];

/// Connects to the database, applies migrations and returns the store.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(
        settings.database_url.expose(),
        settings.database_max_connections,
    )
    .await?;
    store.migrate().await?;
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
    for (session, at) in store::sessions::revoked_since(store.db(), now - access_ttl).await? {
        revocations.revoke_session(session, at);
    }
    for (user, generation, at) in
        store::users::tokens_revoked_since(store.db(), now - access_ttl).await?
    {
        revocations.revoke_user(user, generation, at);
    }
    for user in store::activity::targets_since(store.db(), "user.deleted", now - access_ttl).await?
    {
        revocations.revoke_user(crate::model::UserId(user), i64::MAX, now);
    }
    Ok(App {
        tokens: TokenIssuer::new(key, access_ttl, revocations)?,
        passwords: PasswordHasher::new(settings.argon2, settings.hash_concurrency)?,
        policies: Arc::new(Policies {
            refresh_ttl: chrono(settings.refresh_token_ttl),
            activation_ttl: chrono(settings.activation_ttl),
            public_url: settings.public_url.clone(),
        }),
        store,
        clock,
        mail_wake: Arc::new(Notify::new()),
    })
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

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let ctx = ApiContext {
        app,
        trusted_proxies: Arc::new(settings.trusted_proxies.clone()),
    };
    let limit = settings.max_message_bytes;
    let auth = pb::auth_service_server::AuthServiceServer::new(AuthApi::new(ctx.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let users = pb::user_service_server::UserServiceServer::new(UserApi::new(ctx.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let trace = TraceLayer::new_for_grpc()
        .make_span_with(|request: &http::Request<_>| {
            tracing::info_span!(
                "grpc",
                method = %request.uri().path(),
                tenant_id = tracing::field::Empty,
                user_id = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(
            |response: &http::Response<_>, latency: Duration, _span: &tracing::Span| {
                // Handler errors travel as trailers-only responses: their status is in the headers.
                let status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("0");
                tracing::info!(
                    grpc_status = status,
                    latency_us = latency.as_micros() as u64,
                    "call finished"
                );
            },
        )
        .on_failure(());

    tracing::info!(listen = %listener.local_addr()?, "roster serving");
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            settings.max_concurrent_requests,
        ))
        .layer(trace)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(users)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;

    tracing::info!("roster stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(sender_task, health_task, prune_task);
    store.close().await;
    result.map_err(Into::into)
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
        let horizon = app.clock.now() - app.tokens.access_ttl() - chrono::Duration::seconds(5);
        app.tokens.revocations().prune(horizon);
    }
}
