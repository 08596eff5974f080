//! `roster.v1.WebhookService` and the dispatcher that delivers events to webhook endpoints.
//!
//! An endpoint follows its account's event feed with a cursor of its own. The feed is written in
//! each change's transaction, so it is the outbox the deliveries are made from: the dispatcher
//! reads the events after the endpoint's cursor, POSTs them one at a time in the feed's order,
//! writes each attempt to the delivery log and moves the cursor on after a 2xx. A failure stops
//! the endpoint's deliveries until its retry (exponential backoff from
//! [`WebhookRules::retry_base`]); an endpoint failing for [`WebhookRules::disable_after`] is
//! disabled and the account's owner mailed. One replica at a time delivers to an endpoint (a
//! lease in its row), so a replica's crash costs at most one repeated POST of the same event
//! (same `webhook-id`), and the log keeps one entry per event and endpoint.
//!
//! Requests follow the Standard Webhooks specification: `webhook-id` (the event's id),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256
//! of `id.timestamp.body` under the endpoint's `whsec_` secret). They reach no loopback,
//! link-local or private address unless [`WebhookRules::allowed_networks`] names it (checked on
//! every resolved address, so a DNS name cannot lead there either), follow no redirect, use no
//! proxy and time out.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use rand::RngCore;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::watch;

use super::{App, mail::Mail, policy, policy::Action, sealing::SecretBox};
use crate::{
    model::{
        ClientInfo, DeliveryStatus, Error, Event, EventFilter, EventType, NewActivity, Principal,
        Result, TenantId, WEBHOOK_DESCRIPTION_CHARS, WEBHOOK_URL_CHARS, WebhookDelivery,
        WebhookDeliveryId, WebhookEndpoint, WebhookEndpointId, WebhookEndpointPatch,
    },
    store::{
        self,
        webhooks::{Attempt, DueEndpoint},
    },
};

/// Label of the key that seals signing secrets.
const SECRET_KEY_PURPOSE: &str = "webhook signing secrets v1";
/// How every signing secret begins (Standard Webhooks).
const SECRET_PREFIX: &str = "whsec_";
/// Endpoints of one account.
pub const ENDPOINTS_PER_ACCOUNT: u64 = 20;
/// Endpoints served at once by one replica.
const ENDPOINTS_AT_ONCE: usize = 8;
/// Events read from the feed per query.
const BATCH: u64 = 100;
/// How long a replica delivers to one endpoint before it lets the others have a turn.
const TURN: Duration = Duration::from_secs(30);
/// How often the dispatcher looks for work without being woken.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
const LONGEST_BACKOFF: Duration = Duration::from_secs(3600);
/// Characters of an error kept in the log.
const ERROR_CHARS: usize = 500;

/// The settings of deliveries.
#[derive(Debug, Clone)]
pub struct WebhookRules {
    /// Loopback, link-local or private networks that deliveries may reach all the same.
    pub allowed_networks: Vec<IpNet>,
    /// Longest delivery, connecting included.
    pub timeout: Duration,
    /// Wait before the first retry; doubled for each further one.
    pub retry_base: Duration,
    /// Failing this long without a success disables an endpoint.
    pub disable_after: chrono::Duration,
}

impl WebhookRules {
    /// Whether a delivery may go to `ip`.
    pub fn may_reach(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allowed_networks.iter().any(|net| net.contains(&ip)) || !is_internal(ip)
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failures.
    fn backoff(&self, attempts: i32) -> Duration {
        let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
        self.retry_base
            .saturating_mul(2_u32.saturating_pow(doublings))
            .min(LONGEST_BACKOFF)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Loopback, link-local, private, shared, multicast, reserved or unspecified: not the public
/// internet. NAT64 addresses are refused as well, since they reach IPv4 networks behind them.
fn is_internal(ip: IpAddr) -> bool {
    const V4: &[&str] = &[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    ];
    const V6: &[&str] = &[
        "::/127",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ];
    let ranges = if ip.is_ipv4() { V4 } else { V6 };
    ranges
        .iter()
        .filter_map(|range| range.parse::<IpNet>().ok())
        .any(|net| net.contains(&ip))
}

/// Parses an endpoint URL sent in `field`: http or https, a host, no credentials, and no
/// internal address unless allowed (a name is checked by [`screen_name`] and again whenever it
/// is resolved for a delivery).
pub fn parse_url(field: &str, text: &str, rules: &WebhookRules) -> Result<url::Url> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if text.chars().count() > WEBHOOK_URL_CHARS {
        return Err(Error::invalid(
            field,
            format!("at most {WEBHOOK_URL_CHARS} characters"),
        ));
    }
    let url = url::Url::parse(text)
        .map_err(|err| Error::invalid(field, format!("is not a URL ({err})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(field, "must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(
            field,
            "must not carry a user or password (the signature authenticates roster)",
        ));
    }
    let ip = match url.host() {
        None => return Err(Error::invalid(field, "needs a host")),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = ip
        && !rules.may_reach(ip)
    {
        return Err(Error::invalid(
            field,
            "points at a loopback, link-local or private address \
             (ROSTER_WEBHOOK_ALLOWED_NETWORKS can allow it)",
        ));
    }
    Ok(url)
}

/// Refuses a URL whose host name resolves only to addresses deliveries may not reach, so that
/// such an endpoint fails at once rather than at its first delivery. A name that does not
/// resolve (yet) is accepted: deliveries check every address they connect to in any case.
pub async fn screen_name(field: &str, url: &url::Url, rules: &WebhookRules) -> Result<()> {
    let Some(url::Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    let lookup = tokio::net::lookup_host((name, url.port_or_known_default().unwrap_or(443)));
    let Ok(Ok(found)) = tokio::time::timeout(Duration::from_secs(3), lookup).await else {
        return Ok(());
    };
    let found: Vec<SocketAddr> = found.collect();
    if !found.is_empty() && !found.iter().any(|addr| rules.may_reach(addr.ip())) {
        return Err(Error::invalid(
            field,
            format!(
                "{name} resolves only to loopback, link-local or private addresses \
                 (ROSTER_WEBHOOK_ALLOWED_NETWORKS can allow them)"
            ),
        ));
    }
    Ok(())
}

/// Parses a description sent in `field`.
pub fn parse_description(field: &str, text: &str) -> Result<String> {
    let text = text.trim();
    if text.chars().count() > WEBHOOK_DESCRIPTION_CHARS {
        return Err(Error::invalid(
            field,
            format!("at most {WEBHOOK_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(text.to_owned())
}

/// A new endpoint, as CreateWebhookEndpoint asks for it.
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub url: url::Url,
    pub description: String,
    pub event_types: Vec<EventType>,
}

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key a `whsec_` secret stands for.
fn secret_key(secret: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .map_err(|_| Error::internal("a webhook signing secret is not base64"))
}

/// The `webhook-signature` header of a message (Standard Webhooks, version 1).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The body of an event's delivery: Standard Webhooks' `type`, `timestamp` and `data`, where
/// `data` is the event as EventService shows it.
pub fn payload(event: &Event) -> Vec<u8> {
    let (actor_user_id, actor_service_account_id) = match event.actor {
        Some(actor) if event.actor_service_account => (None, Some(actor.to_string())),
        Some(actor) => (Some(actor.to_string()), None),
        None => (None, None),
    };
    let body = json!({
        "type": event.event_type,
        "timestamp": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "id": event.id.to_string(),
            "cursor": event.cursor.to_string(),
            "tenant_id": event.tenant_id.to_string(),
            "type": event.event_type,
            "target_type": event.target_type,
            "target_id": event.target_id.map(|id| id.to_string()),
            "actor_user_id": actor_user_id,
            "actor_service_account_id": actor_service_account_id,
            "fields": event.fields,
            "occurred_at": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Associated data of an endpoint's sealed secret: its account and its row.
fn secret_binding(tenant_id: TenantId, id: WebhookEndpointId) -> Vec<u8> {
    let mut aad = tenant_id.0.as_bytes().to_vec();
    aad.extend_from_slice(id.0.as_bytes());
    aad
}

impl App {
    fn webhook_box(&self) -> Result<SecretBox> {
        SecretBox::new(&self.tokens.derive_key(SECRET_KEY_PURPOSE))
    }

    fn webhook_activity(
        principal: &Principal,
        action: &'static str,
        endpoint: WebhookEndpointId,
        client: &ClientInfo,
        details: serde_json::Value,
    ) -> NewActivity {
        NewActivity {
            tenant_id: principal.tenant_id,
            actor: Some(principal.user_id),
            action,
            target_type: Some("webhook_endpoint"),
            target_id: Some(endpoint.0),
            client: client.clone(),
            details,
        }
    }

    /// Creates an endpoint, which receives the events committed after it; returns it with its
    /// signing secret (shown this once).
    pub async fn create_webhook_endpoint(
        &self,
        principal: &Principal,
        new: NewWebhookEndpoint,
        client: &ClientInfo,
    ) -> Result<(WebhookEndpoint, String)> {
        policy::authorize(principal, Action::ManageWebhooks)?;
        screen_name("url", &new.url, &self.policies.webhooks).await?;
        let now = self.clock.now();
        let tx = self.change().await?;
        if store::webhooks::count_endpoints(&tx, principal.tenant_id).await?
            >= ENDPOINTS_PER_ACCOUNT
        {
            return Err(Error::precondition(
                "TOO_MANY_ENDPOINTS",
                format!("an account has at most {ENDPOINTS_PER_ACCOUNT} webhook endpoints"),
            ));
        }
        let (_, head) = store::events::bounds(&tx, principal.tenant_id).await?;
        let endpoint = WebhookEndpoint {
            id: WebhookEndpointId::new(),
            tenant_id: principal.tenant_id,
            url: new.url,
            description: new.description,
            event_types: new.event_types,
            enabled: true,
            disabled_reason: None,
            cursor: head,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let secret = new_secret();
        let sealed = self.webhook_box()?.seal(
            &secret_binding(endpoint.tenant_id, endpoint.id),
            secret.as_bytes(),
        )?;
        store::webhooks::insert_endpoint(&tx, &endpoint, &sealed).await?;
        self.record(
            &tx,
            Self::webhook_activity(
                principal,
                "webhook.endpoint_created",
                endpoint.id,
                client,
                json!({ "url": endpoint.url.as_str(), "event_types": type_names(&endpoint.event_types) }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        Ok((endpoint, secret))
    }

    /// One endpoint of the caller's account.
    pub async fn get_webhook_endpoint(
        &self,
        principal: &Principal,
        id: WebhookEndpointId,
    ) -> Result<WebhookEndpoint> {
        policy::authorize(principal, Action::ManageWebhooks)?;
        store::webhooks::get_endpoint(self.store.db(), principal.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("webhook endpoint"))
    }

    /// A page of the caller's account's endpoints; the bool says whether more follow.
    pub async fn list_webhook_endpoints(
        &self,
        principal: &Principal,
        after: Option<WebhookEndpointId>,
        page_size: u64,
    ) -> Result<(Vec<WebhookEndpoint>, bool)> {
        policy::authorize(principal, Action::ManageWebhooks)?;
        let mut endpoints = store::webhooks::list_endpoints(
            self.store.db(),
            principal.tenant_id,
            after,
            page_size + 1,
        )
        .await?;
        let more = endpoints.len() as u64 > page_size;
        endpoints.truncate(page_size as usize);
        Ok((endpoints, more))
    }

    /// Changes an endpoint; enabling a disabled one resumes its deliveries where they stopped.
    pub async fn update_webhook_endpoint(
        &self,
        principal: &Principal,
        id: WebhookEndpointId,
        patch: WebhookEndpointPatch,
        client: &ClientInfo,
    ) -> Result<WebhookEndpoint> {
        policy::authorize(principal, Action::ManageWebhooks)?;
        if let Some(url) = &patch.url {
            screen_name("endpoint.url", url, &self.policies.webhooks).await?;
        }
        let now = self.clock.now();
        let tx = self.change().await?;
        let mut endpoint = store::webhooks::get_endpoint(&tx, principal.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("webhook endpoint"))?;
        if let Some(url) = patch.url {
            endpoint.url = url;
        }
        if let Some(description) = patch.description {
            endpoint.description = description;
        }
        if let Some(types) = patch.event_types {
            endpoint.event_types = types;
        }
        if let Some(enabled) = patch.enabled {
            if enabled && !endpoint.enabled {
                endpoint.disabled_reason = None;
                endpoint.failing_since = None;
            }
            endpoint.enabled = enabled;
        }
        endpoint.updated_at = now;
        store::webhooks::update_endpoint(&tx, &endpoint, now).await?;
        self.record(
            &tx,
            Self::webhook_activity(
                principal,
                "webhook.endpoint_updated",
                endpoint.id,
                client,
                json!({
                    "url": endpoint.url.as_str(),
                    "event_types": type_names(&endpoint.event_types),
                    "enabled": endpoint.enabled,
                }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        self.events.ring();
        Ok(endpoint)
    }

    /// Deletes an endpoint and its delivery log.
    pub async fn delete_webhook_endpoint(
        &self,
        principal: &Principal,
        id: WebhookEndpointId,
        client: &ClientInfo,
    ) -> Result<()> {
        policy::authorize(principal, Action::ManageWebhooks)?;
        let tx = self.change().await?;
        if !store::webhooks::delete_endpoint(&tx, principal.tenant_id, id).await? {
            return Err(Error::NotFound("webhook endpoint"));
        }
        self.record(
            &tx,
            Self::webhook_activity(principal, "webhook.endpoint_deleted", id, client, json!({})),
        )
        .await?;
        self.commit(tx).await
    }

    /// A page of an endpoint's delivery log, newest event first, before event cursor `before`;
    /// the bool says whether more follow.
    pub async fn list_webhook_deliveries(
        &self,
        principal: &Principal,
        endpoint_id: WebhookEndpointId,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        page_size: u64,
    ) -> Result<(Vec<WebhookDelivery>, bool)> {
        let endpoint = self.get_webhook_endpoint(principal, endpoint_id).await?;
        let mut deliveries = store::webhooks::list_deliveries(
            self.store.db(),
            endpoint.tenant_id,
            endpoint.id,
            status,
            before,
            page_size + 1,
        )
        .await?;
        let more = deliveries.len() as u64 > page_size;
        deliveries.truncate(page_size as usize);
        Ok((deliveries, more))
    }

    /// Queues a logged event for another delivery to its (enabled) endpoint.
    pub async fn redeliver_webhook(
        &self,
        principal: &Principal,
        endpoint_id: WebhookEndpointId,
        delivery_id: WebhookDeliveryId,
        client: &ClientInfo,
    ) -> Result<WebhookDelivery> {
        let endpoint = self.get_webhook_endpoint(principal, endpoint_id).await?;
        if !endpoint.enabled {
            return Err(Error::precondition(
                "ENDPOINT_DISABLED",
                "the endpoint is disabled: enable it first (UpdateWebhookEndpoint)",
            ));
        }
        let now = self.clock.now();
        let tx = self.change().await?;
        let mut delivery =
            store::webhooks::get_delivery(&tx, endpoint.tenant_id, endpoint.id, delivery_id)
                .await?
                .ok_or(Error::NotFound("webhook delivery"))?;
        store::webhooks::queue_redelivery(&tx, delivery.id, now).await?;
        self.record(
            &tx,
            Self::webhook_activity(
                principal,
                "webhook.redelivery_requested",
                endpoint.id,
                client,
                json!({ "delivery_id": delivery.id.to_string(), "event_id": delivery.event_id.to_string() }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        self.events.ring();
        delivery.redeliver = true;
        delivery.next_attempt_at = Some(now);
        Ok(delivery)
    }

    /// Disables a failing endpoint, gives up its pending delivery, and tells the account's owner
    /// by mail.
    async fn disable_failing_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
        since: DateTime<Utc>,
        last_error: &str,
    ) -> Result<()> {
        let now = self.clock.now();
        let reason = format!(
            "failing since {} (last error: {last_error})",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let tx = self.change().await?;
        if !store::webhooks::disable(&tx, endpoint.id, &reason, now).await? {
            return Ok(());
        }
        store::webhooks::give_up_pending(&tx, endpoint.id).await?;
        let owner = match store::tenants::get(&tx, endpoint.tenant_id).await? {
            Some(tenant) => match tenant.owner_user_id {
                Some(owner) => store::users::get(&tx, tenant.id, owner)
                    .await?
                    .map(|user| (tenant, user)),
                None => None,
            },
            None => None,
        };
        if let Some((tenant, owner)) = owner {
            let mail = Mail {
                to: owner.email.as_str().to_owned(),
                subject: format!(
                    "A webhook endpoint of {} was disabled",
                    tenant.name.as_str()
                ),
                body: format!(
                    "Hello {},\r\n\r\nroster disabled the webhook endpoint {} of the account {}: \
                     its deliveries have been failing since {} (last error: {last_error}).\r\n\r\n\
                     Events are kept for it: fix the endpoint and enable it again \
                     (WebhookService/UpdateWebhookEndpoint) to receive them from where they \
                     stopped.\r\n",
                    owner.first_name.as_str(),
                    endpoint.url,
                    tenant.name.as_str(),
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
            };
            self.queue_mail(&tx, Some(tenant.id), &mail).await?;
        }
        self.record(
            &tx,
            NewActivity {
                tenant_id: endpoint.tenant_id,
                actor: None,
                action: "webhook.endpoint_disabled",
                target_type: Some("webhook_endpoint"),
                target_id: Some(endpoint.id.0),
                client: ClientInfo::default(),
                details: json!({ "url": endpoint.url.as_str(), "reason": reason }),
            },
        )
        .await?;
        self.commit(tx).await?;
        crate::metrics::events().endpoint_disabled();
        tracing::warn!(endpoint_id = %endpoint.id, %reason, "webhook endpoint disabled");
        Ok(())
    }
}

fn type_names(types: &[EventType]) -> Vec<&'static str> {
    types.iter().map(|kind| kind.as_str()).collect()
}

/// Resolves names for deliveries, keeping only the addresses they may reach; a name with none
/// left fails, so that DNS cannot lead a delivery inside the network.
struct GuardedResolver {
    rules: Arc<WebhookRules>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.rules.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| rules.may_reach(addr.ip()))
                .collect();
            if allowed.is_empty() {
                let reason = if found.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!("{host} resolves only to loopback, link-local or private addresses")
                };
                return Err(reason.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of deliveries: no redirects, no proxy, a timeout, checked addresses, TLS
/// with the webpki roots on ring.
fn http_client(rules: &Arc<WebhookRules>) -> Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(rules.timeout)
        .connect_timeout(rules.timeout)
        .user_agent(concat!("roster-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver {
            rules: rules.clone(),
        }))
        .build()
        .map_err(Error::internal_from)
}

/// Why an attempt failed.
#[derive(Debug)]
struct Failure {
    response_code: Option<i32>,
    error: String,
}

/// An error and its causes, on one line, shortened for the log.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text.chars().take(ERROR_CHARS).collect()
}

/// Delivers events to the endpoints, until shutdown.
pub async fn deliver_webhooks(app: App, mut stop: watch::Receiver<bool>) {
    let rules = Arc::new(app.policies.webhooks.clone());
    let client = match http_client(&rules) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "webhook deliveries cannot start");
            return;
        }
    };
    let dispatcher = Dispatcher { app, client, rules };
    let mut bell = dispatcher.app.events.subscribe();
    loop {
        if let Err(err) = dispatcher.pass(&stop).await {
            tracing::warn!(error = %err, "webhook delivery pass failed");
        }
        tokio::select! {
            _ = bell.changed() => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

struct Dispatcher {
    app: App,
    client: reqwest::Client,
    rules: Arc<WebhookRules>,
}

impl Dispatcher {
    /// Serves every due endpoint, a few at a time.
    async fn pass(&self, stop: &watch::Receiver<bool>) -> Result<()> {
        let due =
            store::webhooks::due_endpoints(self.app.store.db(), self.app.clock.now(), 100).await?;
        futures::stream::iter(due)
            .for_each_concurrent(ENDPOINTS_AT_ONCE, |due| async move {
                let id = due.endpoint.id;
                if let Err(err) = self.serve(due, stop).await {
                    tracing::warn!(endpoint_id = %id, error = %err, "webhook deliveries failed");
                }
            })
            .await;
        Ok(())
    }

    /// Takes the endpoint's lease, delivers for a turn, and gives the lease back.
    async fn serve(&self, due: DueEndpoint, stop: &watch::Receiver<bool>) -> Result<()> {
        let db = self.app.store.db();
        let now = self.app.clock.now();
        // Longer than a turn plus one delivery's timeout: the holder has always let go by then.
        let lease = chrono::Duration::from_std(TURN + self.rules.timeout * 2)
            .unwrap_or(chrono::Duration::MAX);
        if !store::webhooks::claim(db, due.endpoint.id, now, now + lease).await? {
            return Ok(());
        }
        let result = self.deliver(&due, stop).await;
        store::webhooks::release(db, due.endpoint.id).await?;
        result
    }

    async fn deliver(&self, due: &DueEndpoint, stop: &watch::Receiver<bool>) -> Result<()> {
        let db = self.app.store.db();
        let endpoint = &due.endpoint;
        let secret = self
            .app
            .webhook_box()?
            .open(
                &secret_binding(endpoint.tenant_id, endpoint.id),
                &due.secret_sealed,
            )
            .and_then(|bytes| String::from_utf8(bytes).map_err(Error::internal_from))?;
        let key = secret_key(&secret)?;
        let started = Instant::now();

        for delivery in store::webhooks::redeliveries(db, endpoint.id, 20).await? {
            self.redeliver(endpoint, &key, &delivery).await?;
        }

        let (oldest, head) = store::events::bounds(db, endpoint.tenant_id).await?;
        let mut cursor = endpoint.cursor;
        if cursor < oldest {
            tracing::warn!(endpoint_id = %endpoint.id, missed_through = oldest,
                "events older than the retention period were deleted before this endpoint got them");
            cursor = oldest;
        }
        let filter = EventFilter {
            types: endpoint.event_types.clone(),
            target: None,
        };
        let mut failing_since = endpoint.failing_since;
        while started.elapsed() < TURN && !*stop.borrow() {
            let events =
                store::events::list(db, endpoint.tenant_id, cursor, head, &filter, BATCH).await?;
            let cursors: Vec<i64> = events.iter().map(|event| event.cursor).collect();
            let logged = store::webhooks::deliveries_of(db, endpoint.id, &cursors).await?;
            for event in &events {
                let entry = logged
                    .iter()
                    .find(|entry| entry.event_cursor == event.cursor);
                // Delivered before a crash left the cursor behind: not sent twice.
                if entry.is_some_and(|entry| entry.status == DeliveryStatus::Delivered) {
                    store::webhooks::advance(db, endpoint.id, event.cursor).await?;
                    cursor = event.cursor;
                    continue;
                }
                let attempts = entry.map_or(0, |entry| entry.attempts) + 1;
                let outcome = self.send(&endpoint.url, &key, event).await;
                let at = self.app.clock.now();
                let reference = (event.cursor, event.id, event.event_type.as_str());
                match outcome {
                    Ok(code) => {
                        crate::metrics::events().attempt(true);
                        let attempt = Attempt {
                            status: DeliveryStatus::Delivered,
                            response_code: Some(code),
                            error: None,
                            at,
                            next_attempt_at: None,
                        };
                        store::webhooks::record_attempt(
                            db,
                            endpoint.tenant_id,
                            endpoint.id,
                            reference,
                            &attempt,
                        )
                        .await?;
                        store::webhooks::advance(db, endpoint.id, event.cursor).await?;
                        cursor = event.cursor;
                        failing_since = None;
                    }
                    Err(failure) => {
                        crate::metrics::events().attempt(false);
                        let since = failing_since.unwrap_or(at);
                        let give_up = at - since >= self.rules.disable_after;
                        let retry_at = at
                            + chrono::Duration::from_std(self.rules.backoff(attempts))
                                .unwrap_or(chrono::Duration::MAX);
                        let attempt = Attempt {
                            status: if give_up {
                                DeliveryStatus::Failed
                            } else {
                                DeliveryStatus::Pending
                            },
                            response_code: failure.response_code,
                            error: Some(failure.error.clone()),
                            at,
                            next_attempt_at: (!give_up).then_some(retry_at),
                        };
                        store::webhooks::record_attempt(
                            db,
                            endpoint.tenant_id,
                            endpoint.id,
                            reference,
                            &attempt,
                        )
                        .await?;
                        tracing::info!(endpoint_id = %endpoint.id, event_id = %event.id,
                            attempts, error = %failure.error, "webhook delivery failed");
                        if give_up {
                            self.app
                                .disable_failing_endpoint(endpoint, since, &failure.error)
                                .await?;
                        } else {
                            store::webhooks::set_failing(db, endpoint.id, since, retry_at).await?;
                        }
                        return Ok(());
                    }
                }
            }
            if (events.len() as u64) < BATCH {
                // Read to the head: the events its types passed over are behind it too.
                store::webhooks::advance(db, endpoint.id, head).await?;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Sends a logged event again, as RedeliverWebhook asked; its outcome is final (another
    /// redelivery may be asked for).
    async fn redeliver(
        &self,
        endpoint: &WebhookEndpoint,
        key: &[u8],
        delivery: &WebhookDelivery,
    ) -> Result<()> {
        let db = self.app.store.db();
        let event = store::events::list(
            db,
            endpoint.tenant_id,
            delivery.event_cursor - 1,
            delivery.event_cursor,
            &EventFilter::default(),
            1,
        )
        .await?
        .into_iter()
        .next();
        let outcome = match &event {
            Some(event) => self.send(&endpoint.url, key, event).await,
            None => Err(Failure {
                response_code: None,
                error: "the event was deleted at the end of the retention period".into(),
            }),
        };
        let at = self.app.clock.now();
        let attempt = match outcome {
            Ok(code) => Attempt {
                status: DeliveryStatus::Delivered,
                response_code: Some(code),
                error: None,
                at,
                next_attempt_at: None,
            },
            Err(failure) => Attempt {
                status: DeliveryStatus::Failed,
                response_code: failure.response_code,
                error: Some(failure.error),
                at,
                next_attempt_at: None,
            },
        };
        store::webhooks::record_attempt(
            db,
            endpoint.tenant_id,
            endpoint.id,
            (
                delivery.event_cursor,
                delivery.event_id,
                delivery.event_type.as_str(),
            ),
            &attempt,
        )
        .await
    }

    /// POSTs one event, signed; the HTTP status of a 2xx answer.
    async fn send(
        &self,
        url: &url::Url,
        key: &[u8],
        event: &Event,
    ) -> std::result::Result<i32, Failure> {
        let body = payload(event);
        let id = event.id.to_string();
        // The receiver checks the timestamp against its own wall clock, so it is the wall
        // clock's, not the application clock's.
        let timestamp = Utc::now().timestamp();
        let signature = signature(key, &id, timestamp, &body);
        let response = self
            .client
            .post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|err| Failure {
                response_code: None,
                error: describe(&err),
            })?;
        let code = response.status();
        if code.is_success() {
            return Ok(i32::from(code.as_u16()));
        }
        let error = if code.is_redirection() {
            format!("HTTP {code} (redirects are not followed)")
        } else {
            format!("HTTP {code}")
        };
        Err(Failure {
            response_code: Some(i32::from(code.as_u16())),
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allowed: &[&str]) -> WebhookRules {
        WebhookRules {
            allowed_networks: allowed.iter().map(|net| net.parse().unwrap()).collect(),
            timeout: Duration::from_secs(1),
            retry_base: Duration::from_secs(5),
            disable_after: chrono::Duration::days(5),
        }
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let closed = rules(&[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(!closed.may_reach(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"] {
            assert!(closed.may_reach(ip.parse().unwrap()), "{ip}");
        }
        let loopback = rules(&["127.0.0.0/8", "::1/128"]);
        assert!(loopback.may_reach("127.0.0.1".parse().unwrap()));
        assert!(loopback.may_reach("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!loopback.may_reach("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn urls_are_checked() {
        let closed = rules(&[]);
        assert!(parse_url("url", "https://hooks.example.com/roster", &closed).is_ok());
        for bad in [
            "",
            "ftp://example.com/",
            "https://user:pass@example.com/",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "not a url",
        ] {
            assert!(parse_url("url", bad, &closed).is_err(), "{bad:?}");
        }
        assert!(parse_url("url", "http://127.0.0.1:8080/", &rules(&["127.0.0.1/32"])).is_ok());
    }

    #[tokio::test]
    async fn names_are_resolved_to_allowed_addresses_only() {
        use reqwest::dns::Resolve;
        let url = url::Url::parse("http://localhost:9/hook").unwrap();
        assert!(screen_name("url", &url, &rules(&[])).await.is_err());
        let closed = GuardedResolver {
            rules: Arc::new(rules(&[])),
        };
        let refused = closed
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost is refused");
        assert!(refused.to_string().contains("loopback"), "{refused}");
        let open = GuardedResolver {
            rules: Arc::new(rules(&["127.0.0.0/8", "::1/128"])),
        };
        assert!(open.resolve("localhost".parse().unwrap()).await.is_ok());
        assert!(
            screen_name("url", &url, &rules(&["127.0.0.0/8", "::1/128"]))
                .await
                .is_ok()
        );
    }

    #[test]
    fn the_signature_is_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let rules = rules(&[]);
        assert_eq!(rules.backoff(1), Duration::from_secs(5));
        assert_eq!(rules.backoff(2), Duration::from_secs(10));
        assert_eq!(rules.backoff(4), Duration::from_secs(40));
        assert_eq!(rules.backoff(40), LONGEST_BACKOFF);
    }
}
