//! WebhookService: endpoints, signed in-order deliveries from the event feed, retries, the
//! delivery log, redelivery, disabling, and the address rules; against a real HTTP receiver
//! started by each test. (tests/e2e/test_webhooks.py checks the signatures with the independent
//! `standardwebhooks` implementation.)

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use roster::api::pb::{self, webhook_service_client::WebhookServiceClient};
use tonic::{Code, Status, transport::Channel};

use crate::harness::{TestApp, authed, eventually, expect_bad_fields, expect_code, spawn_app_with};
use crate::users_support::*;

/// Settings under which deliveries may reach this machine's loopback (the receiver).
const LOOPBACK: (&str, &str) = ("webhook-allowed-networks", "127.0.0.0/8,::1");
/// Quick retries, for tests that wait for them.
const QUICK_RETRIES: (&str, &str) = ("webhook-retry-base", "100ms");

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }

    fn cursor(&self) -> i64 {
        self.json()["data"]["cursor"]
            .as_str()
            .and_then(|cursor| cursor.parse().ok())
            .expect("a cursor")
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    /// Answer 500 to this many requests first.
    fail_first: usize,
    /// Answer 503 to every request.
    fail_all: bool,
    /// Answer 302 to every request.
    redirect: bool,
    /// Wait this long before answering.
    delay: Option<Duration>,
}

/// A real HTTP/1.1 server on 127.0.0.1 that records every request.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receiver = Self {
            addr: listener.local_addr().expect("addr"),
            received: Arc::default(),
            behaviour: Arc::default(),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let receiver = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let receiver = receiver.clone();
                        async move { receiver.answer(request).await }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    async fn answer(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (id, timestamp, signature) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await?.to_bytes().to_vec();
        let behaviour = self.behaviour.lock().unwrap().clone();
        if let Some(delay) = behaviour.delay {
            tokio::time::sleep(delay).await;
        }
        let answered = {
            let mut received = self.received.lock().unwrap();
            let answered = if path == "/elsewhere" {
                200
            } else if behaviour.redirect {
                302
            } else if behaviour.fail_all {
                503
            } else if received.len() < behaviour.fail_first {
                500
            } else {
                200
            };
            received.push(Received {
                id,
                timestamp,
                signature,
                body,
                answered,
            });
            answered
        };
        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
        *response.status_mut() = hyper::StatusCode::from_u16(answered).expect("a status");
        if answered == 302 {
            response.headers_mut().insert(
                "location",
                format!("http://{}/elsewhere", self.addr).parse().unwrap(),
            );
        }
        Ok(response)
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| request.answered == 200)
            .collect()
    }

    /// Waits until `count` requests were accepted; returns them.
    async fn wait_for_accepted(&self, count: usize) -> Vec<Received> {
        let arrived = eventually(Duration::from_secs(20), || async {
            self.accepted().len() >= count
        })
        .await;
        let accepted = self.accepted();
        assert!(
            arrived,
            "{count} deliveries expected, {} accepted of {} received",
            accepted.len(),
            self.received().len()
        );
        accepted
    }
}

/// The check a receiver makes (Standard Webhooks): HMAC-SHA256 of `id.timestamp.body` under
/// the secret's bytes.
fn signed_by(request: &Received, secret: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", request.id, request.timestamp).as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    request
        .signature
        .split(' ')
        .any(|candidate| candidate == expected)
}

fn webhooks(app: &TestApp) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(app.channel.clone())
}

async fn create_endpoint(
    app: &TestApp,
    token: &str,
    url: &str,
    types: &[&str],
) -> Result<pb::CreateWebhookEndpointResponse, Status> {
    webhooks(app)
        .create_webhook_endpoint(authed(
            pb::CreateWebhookEndpointRequest {
                url: url.to_owned(),
                description: "lead service".into(),
                event_types: types.iter().map(|kind| (*kind).to_owned()).collect(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn get_endpoint(app: &TestApp, token: &str, id: &str) -> Result<pb::WebhookEndpoint, Status> {
    webhooks(app)
        .get_webhook_endpoint(authed(
            pb::GetWebhookEndpointRequest {
                endpoint_id: id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn update_endpoint(
    app: &TestApp,
    token: &str,
    id: &str,
    endpoint: pb::WebhookEndpoint,
    paths: &[&str],
) -> Result<pb::WebhookEndpoint, Status> {
    webhooks(app)
        .update_webhook_endpoint(authed(
            pb::UpdateWebhookEndpointRequest {
                endpoint_id: id.to_owned(),
                endpoint: Some(endpoint),
                update_mask: mask(paths),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn deliveries(
    app: &TestApp,
    token: &str,
    id: &str,
) -> Result<Vec<pb::WebhookDelivery>, Status> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = webhooks(app)
            .list_webhook_deliveries(authed(
                pb::ListWebhookDeliveriesRequest {
                    endpoint_id: id.to_owned(),
                    status: 0,
                    page_size: 7,
                    page_token: page_token.clone(),
                },
                token,
            ))
            .await?
            .into_inner();
        all.extend(page.deliveries);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// The log once `settled` holds for it (or after 10 s, whatever it shows, for
/// the assertions to report): the receiver's answer is seen before roster
/// writes the attempt down.
async fn log_when(
    app: &TestApp,
    token: &str,
    id: &str,
    settled: impl Fn(&[pb::WebhookDelivery]) -> bool,
) -> Vec<pb::WebhookDelivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = deliveries(app, token, id).await.unwrap();
        if settled(&log) || tokio::time::Instant::now() >= deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The log once it shows `count` entries, all delivered.
async fn delivered_log(
    app: &TestApp,
    token: &str,
    id: &str,
    count: usize,
) -> Vec<pb::WebhookDelivery> {
    log_when(app, token, id, |log| {
        log.len() == count
            && log
                .iter()
                .all(|entry| status(entry) == pb::WebhookDeliveryStatus::Delivered)
    })
    .await
}

fn status(delivery: &pb::WebhookDelivery) -> pb::WebhookDeliveryStatus {
    pb::WebhookDeliveryStatus::try_from(delivery.status).expect("a known status")
}

/// The account's events of `types` after `after`, as the feed lists them.
async fn feed(app: &TestApp, token: &str, after: &str) -> Vec<pb::Event> {
    let mut client =
        roster::api::pb::event_service_client::EventServiceClient::new(app.channel.clone());
    let mut events = Vec::new();
    let mut cursor = after.to_owned();
    loop {
        let page = client
            .list_events(authed(
                pb::ListEventsRequest {
                    after: cursor.clone(),
                    filter: None,
                    page_size: 1000,
                },
                token,
            ))
            .await
            .expect("ListEvents")
            .into_inner();
        events.extend(page.events);
        cursor = page.next_cursor;
        if !page.more {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_endpoint_signed_in_feed_order_and_is_logged_once() {
    let app = spawn_app_with(&[LOOPBACK]).await;
    let receiver = Receiver::start().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let created = create_endpoint(&app, acme.token(), &receiver.url(), &["user.*"])
        .await
        .expect("CreateWebhookEndpoint");
    let endpoint = created.endpoint.expect("endpoint");
    assert!(created.signing_secret.starts_with("whsec_"));
    assert!(endpoint.enabled);
    assert_eq!(
        endpoint.event_types,
        [
            "user.created",
            "user.updated",
            "user.activated",
            "user.deactivated",
            "user.reactivated",
            "user.deleted",
            "user.roles_changed"
        ]
    );
    // The secret is shown once: no read returns it.
    let read = get_endpoint(&app, acme.token(), &endpoint.id)
        .await
        .unwrap();
    assert!(!format!("{read:?}").contains(&created.signing_secret));

    // Single changes, then a mass change of many users, then the deletion of one.
    let bob = pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let mut ids = vec![bob.id.clone()];
    for i in 0..12 {
        ids.push(
            pending(&app, acme.token(), &format!("u{i}@acme.test"), &["REPORTS"])
                .await
                .id,
        );
    }
    let selected: Vec<&str> = ids.iter().map(String::as_str).collect();
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&selected),
            action: pb::BulkAction::Deactivate as i32,
            ..Default::default()
        },
    )
    .await
    .expect("mass deactivation");
    delete(&app, acme.token(), &bob.id)
        .await
        .expect("delete bob");
    let wanted: Vec<pb::Event> = feed(&app, acme.token(), &endpoint.cursor)
        .await
        .into_iter()
        .filter(|event| event.r#type.starts_with("user."))
        .collect();
    let count = |kind: &str| wanted.iter().filter(|event| event.r#type == kind).count();
    assert_eq!(count("user.created"), 13);
    assert_eq!(count("user.deactivated"), 13);
    assert_eq!(count("user.deleted"), 1);

    let accepted = receiver.wait_for_accepted(wanted.len()).await;
    // Exactly the feed's events, in its order, each once, each signed.
    let ids_sent: Vec<&str> = accepted.iter().map(|request| request.id.as_str()).collect();
    let ids_fed: Vec<&str> = wanted.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids_sent, ids_fed);
    for request in &accepted {
        assert!(signed_by(request, &created.signing_secret), "{request:?}");
        assert!(!signed_by(
            request,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        ));
        let body = request.json();
        assert_eq!(body["data"]["tenant_id"], acme.account.tenant_id.as_str());
        assert_eq!(body["data"]["id"], request.id.as_str());
    }
    let deleted = accepted.last().unwrap();
    assert_eq!(deleted.event_type(), "user.deleted");
    assert_eq!(deleted.json()["data"]["target_id"], bob.id.as_str());
    assert_eq!(
        deleted.json()["data"]["actor_user_id"],
        acme.owner.user_id.as_str()
    );
    // No secret of any kind travels in an event.
    assert!(!String::from_utf8_lossy(&deleted.body).contains("password"));

    // The log: one entry per event, delivered at the first attempt, newest first.
    let log = delivered_log(&app, acme.token(), &endpoint.id, wanted.len()).await;
    assert_eq!(log.len(), wanted.len());
    let mut logged: Vec<&str> = log.iter().map(|entry| entry.event_id.as_str()).collect();
    logged.reverse();
    assert_eq!(logged, ids_fed);
    for entry in &log {
        assert_eq!(status(entry), pb::WebhookDeliveryStatus::Delivered);
        assert_eq!((entry.attempts, entry.response_code), (1, 200));
        assert!(entry.delivered_at.is_some());
    }
    let endpoint = get_endpoint(&app, acme.token(), &endpoint.id)
        .await
        .unwrap();
    assert!(endpoint.cursor.parse::<i64>().unwrap() >= deleted.cursor());
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), wanted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_and_later_events_wait_for_the_failed_one() {
    let app = spawn_app_with(&[LOOPBACK, QUICK_RETRIES]).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour {
        fail_first: 3,
        ..Default::default()
    });
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let created = create_endpoint(&app, acme.token(), &receiver.url(), &[])
        .await
        .unwrap();
    let endpoint = created.endpoint.unwrap();
    for email in ["bob@acme.test", "carol@acme.test", "dan@acme.test"] {
        pending(&app, acme.token(), email, &["REPORTS"]).await;
    }
    let accepted = receiver.wait_for_accepted(3).await;
    let received = receiver.received();
    // The first event three times (500, 500, 500), then once accepted; only then the others.
    let order: Vec<(i64, u16)> = received
        .iter()
        .map(|request| (request.cursor(), request.answered))
        .collect();
    let first = accepted[0].cursor();
    assert_eq!(
        &order[..4],
        &[(first, 500), (first, 500), (first, 500), (first, 200)]
    );
    assert_eq!(received.len(), 6, "{order:?}");
    assert!(
        received[..4]
            .iter()
            .all(|request| request.id == accepted[0].id)
    );
    let cursors: Vec<i64> = accepted.iter().map(Received::cursor).collect();
    assert!(
        cursors.windows(2).all(|pair| pair[0] < pair[1]),
        "{cursors:?}"
    );
    // Every attempt was signed afresh (its own timestamp) and verifies.
    assert!(
        received
            .iter()
            .all(|request| signed_by(request, &created.signing_secret))
    );

    let log = delivered_log(&app, acme.token(), &endpoint.id, 3).await;
    assert_eq!(log.len(), 3);
    let oldest = log.last().unwrap();
    assert_eq!((oldest.attempts, oldest.response_code), (4, 200));
    assert_eq!(status(oldest), pb::WebhookDeliveryStatus::Delivered);
    assert!(oldest.last_error.is_empty());
    let endpoint = get_endpoint(&app, acme.token(), &endpoint.id)
        .await
        .unwrap();
    assert!(endpoint.failing_since.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_long_enough_is_disabled_its_owner_told_and_it_resumes_when_enabled() {
    let app = spawn_app_with(&[LOOPBACK, QUICK_RETRIES, ("webhook-disable-after", "1h")]).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour {
        fail_all: true,
        ..Default::default()
    });
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let endpoint = create_endpoint(&app, acme.token(), &receiver.url(), &["user.created"])
        .await
        .unwrap()
        .endpoint
        .unwrap();
    pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    pending(&app, acme.token(), "carol@acme.test", &["REPORTS"]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            receiver.received().len() >= 2
        })
        .await
    );
    let failing = get_endpoint(&app, acme.token(), &endpoint.id)
        .await
        .unwrap();
    assert!(failing.enabled);
    assert!(failing.failing_since.is_some());
    let log = deliveries(&app, acme.token(), &endpoint.id).await.unwrap();
    assert_eq!(log.len(), 1, "the second event waits for the first");
    assert_eq!(status(&log[0]), pb::WebhookDeliveryStatus::Pending);
    assert_eq!(log[0].response_code, 503);
    assert_eq!(log[0].last_error, "HTTP 503 Service Unavailable");
    assert!(log[0].next_attempt_time.is_some());

    // An hour and more of failures: disabled at the next attempt, and the owner is mailed.
    app.clock.advance(Duration::from_secs(2 * 3600));
    let acme = org_relogin(&app, acme).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            !get_endpoint(&app, acme.token(), &endpoint.id)
                .await
                .unwrap()
                .enabled
        })
        .await,
        "the endpoint was not disabled"
    );
    let disabled = get_endpoint(&app, acme.token(), &endpoint.id)
        .await
        .unwrap();
    assert!(
        disabled.disabled_reason.contains("HTTP 503"),
        "{}",
        disabled.disabled_reason
    );
    let log = deliveries(&app, acme.token(), &endpoint.id).await.unwrap();
    assert_eq!(status(&log[0]), pb::WebhookDeliveryStatus::Failed);
    let mail = app
        .wait_for_mails_to("ann@acme.test", 2)
        .await
        .into_iter()
        .find(|mail| mail.contains("was disabled"))
        .expect("the owner is told");
    assert!(mail.contains(&receiver.url()), "{mail}");
    // Disabled: nothing is sent, and redelivery is refused.
    let attempts = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.received().len(), attempts);
    let refused = webhooks(&app)
        .redeliver_webhook(authed(
            pb::RedeliverWebhookRequest {
                endpoint_id: endpoint.id.clone(),
                delivery_id: log[0].id.clone(),
            },
            acme.token(),
        ))
        .await;
    assert_eq!(
        crate::harness::reason(&expect_code(refused, Code::FailedPrecondition)).as_deref(),
        Some("ENDPOINT_DISABLED")
    );

    // Fixed and enabled again: both events arrive, the failed one first.
    receiver.set(Behaviour::default());
    let enabled = update_endpoint(
        &app,
        acme.token(),
        &endpoint.id,
        pb::WebhookEndpoint {
            enabled: true,
            ..Default::default()
        },
        &["enabled"],
    )
    .await
    .unwrap();
    assert!(enabled.enabled && enabled.disabled_reason.is_empty());
    let accepted = receiver.wait_for_accepted(2).await;
    assert_eq!(accepted[0].id, log[0].event_id);
    let log = delivered_log(&app, acme.token(), &endpoint.id, 2).await;
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|entry| status(entry) == pb::WebhookDeliveryStatus::Delivered)
    );
}

/// Logs the owner in again (the clock moved past the access token's life).
async fn org_relogin(app: &TestApp, org: Org) -> Org {
    let owner = login(app, &org, &org.owner.email, &org.owner.password).await;
    Org { owner, ..org }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_reach_no_internal_address_follow_no_redirect_and_time_out() {
    // Without the setting, loopback endpoints are refused outright, by address or by name.
    let closed = spawn_app_with(&[]).await;
    let acme = org(&closed, "Acme", "ann@acme.test").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:9/hook",
    ] {
        let refused = create_endpoint(&closed, acme.token(), url, &[]).await;
        let status = expect_bad_fields(refused, &["url"]);
        assert!(
            status.message().contains("private"),
            "{url}: {}",
            status.message()
        );
    }
    for (url, field) in [
        ("ftp://example.com/", "url"),
        ("https://user:secret@example.com/", "url"),
        ("", "url"),
    ] {
        expect_bad_fields(
            create_endpoint(&closed, acme.token(), url, &[]).await,
            &[field],
        );
    }
    drop(closed);

    let app = spawn_app_with(&[
        LOOPBACK,
        ("webhook-timeout", "500ms"),
        ("webhook-retry-base", "1h"),
    ])
    .await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    // A redirect is a failure, and its target is never asked.
    let redirecting = Receiver::start().await;
    redirecting.set(Behaviour {
        redirect: true,
        ..Default::default()
    });
    let slow = Receiver::start().await;
    slow.set(Behaviour {
        delay: Some(Duration::from_secs(3)),
        ..Default::default()
    });
    let redirected = create_endpoint(&app, acme.token(), &redirecting.url(), &[])
        .await
        .unwrap()
        .endpoint
        .unwrap();
    let timed_out = create_endpoint(&app, acme.token(), &slow.url(), &[])
        .await
        .unwrap()
        .endpoint
        .unwrap();
    pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    for (endpoint, expected) in [
        (&redirected, "redirects are not followed"),
        (&timed_out, "timed out"),
    ] {
        let found = eventually(Duration::from_secs(10), || async {
            let log = deliveries(&app, acme.token(), &endpoint.id).await.unwrap();
            log.first()
                .is_some_and(|entry| entry.attempts == 1 && !entry.last_error.is_empty())
        })
        .await;
        assert!(found, "no failed attempt logged for {}", endpoint.url);
        let entry = deliveries(&app, acme.token(), &endpoint.id)
            .await
            .unwrap()
            .remove(0);
        assert!(
            entry.last_error.contains(expected),
            "{}: {}",
            endpoint.url,
            entry.last_error
        );
        assert_eq!(status(&entry), pb::WebhookDeliveryStatus::Pending);
    }
    let paths: HashSet<u16> = redirecting.received().iter().map(|r| r.answered).collect();
    assert_eq!(
        paths,
        HashSet::from([302]),
        "the redirect's target was asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_the_accounts_own_and_need_webhooks_manage() {
    let app = spawn_app_with(&[LOOPBACK]).await;
    let receiver = Receiver::start().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let other = org(&app, "Other", "olga@other.test").await;
    let admin = member(&app, &acme, "adam@acme.test", &["ADMIN"]).await;
    let reports = member(&app, &acme, "rita@acme.test", &["REPORTS"]).await;
    // Admins manage endpoints as the owner does.
    let endpoint = create_endpoint(&app, &admin.access_token, &receiver.url(), &[])
        .await
        .expect("an admin creates an endpoint")
        .endpoint
        .unwrap();
    expect_code(
        create_endpoint(&app, &reports.access_token, &receiver.url(), &[]).await,
        Code::PermissionDenied,
    );
    expect_code(
        get_endpoint(&app, &reports.access_token, &endpoint.id).await,
        Code::PermissionDenied,
    );
    // Another account sees nothing of it, whatever the RPC.
    let theirs = other.token();
    expect_code(
        get_endpoint(&app, theirs, &endpoint.id).await,
        Code::NotFound,
    );
    expect_code(
        update_endpoint(
            &app,
            theirs,
            &endpoint.id,
            pb::WebhookEndpoint::default(),
            &["enabled"],
        )
        .await,
        Code::NotFound,
    );
    expect_code(deliveries(&app, theirs, &endpoint.id).await, Code::NotFound);
    expect_code(
        webhooks(&app)
            .delete_webhook_endpoint(authed(
                pb::DeleteWebhookEndpointRequest {
                    endpoint_id: endpoint.id.clone(),
                },
                theirs,
            ))
            .await,
        Code::NotFound,
    );
    let listed = webhooks(&app)
        .list_webhook_endpoints(authed(pb::ListWebhookEndpointsRequest::default(), theirs))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.endpoints.is_empty());
    // Their changes never reach our endpoint.
    pending(&app, theirs, "oscar@other.test", &["REPORTS"]).await;
    pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let accepted = receiver.wait_for_accepted(1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(
        accepted[0].json()["data"]["tenant_id"],
        acme.account.tenant_id.as_str()
    );

    // Bad input names its field.
    expect_bad_fields(
        create_endpoint(&app, acme.token(), &receiver.url(), &["user.nope"]).await,
        &["event_types[0]"],
    );
    expect_bad_fields(
        update_endpoint(
            &app,
            acme.token(),
            &endpoint.id,
            pb::WebhookEndpoint::default(),
            &["secret"],
        )
        .await,
        &["update_mask"],
    );
    expect_bad_fields(
        update_endpoint(
            &app,
            acme.token(),
            &endpoint.id,
            pb::WebhookEndpoint {
                url: "http://169.254.169.254/".into(),
                ..Default::default()
            },
            &["url"],
        )
        .await,
        &["endpoint.url"],
    );
    expect_bad_fields(
        get_endpoint(&app, acme.token(), "nope").await,
        &["endpoint_id"],
    );
    // Updates keep what the mask does not name.
    let updated = update_endpoint(
        &app,
        acme.token(),
        &endpoint.id,
        pb::WebhookEndpoint {
            event_types: vec!["user.deleted".into()],
            description: "ignored".into(),
            ..Default::default()
        },
        &["event_types"],
    )
    .await
    .unwrap();
    assert_eq!(updated.event_types, ["user.deleted"]);
    assert_eq!(updated.description, "lead service");
    // Deleted with its log.
    webhooks(&app)
        .delete_webhook_endpoint(authed(
            pb::DeleteWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
            },
            acme.token(),
        ))
        .await
        .unwrap();
    expect_code(
        get_endpoint(&app, acme.token(), &endpoint.id).await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart_and_a_logged_event_can_be_redelivered() {
    let app = spawn_app_with(&[LOOPBACK, QUICK_RETRIES]).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour {
        fail_all: true,
        ..Default::default()
    });
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let created = create_endpoint(&app, acme.token(), &receiver.url(), &["user.created"])
        .await
        .unwrap();
    let endpoint = created.endpoint.unwrap();
    for email in ["bob@acme.test", "carol@acme.test", "dan@acme.test"] {
        pending(&app, acme.token(), email, &["REPORTS"]).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            !receiver.received().is_empty()
        })
        .await
    );
    // roster stops with three deliveries pending, and comes back.
    let app = app.restart().await;
    receiver.set(Behaviour::default());
    let accepted = receiver.wait_for_accepted(3).await;
    let ids: HashSet<&str> = accepted.iter().map(|request| request.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each event accepted once");
    let log = delivered_log(&app, acme.token(), &endpoint.id, 3).await;
    assert_eq!(log.len(), 3);
    assert!(
        log.iter()
            .all(|entry| status(entry) == pb::WebhookDeliveryStatus::Delivered)
    );

    // Redelivery sends the same event, with the same webhook-id, once more.
    let oldest = log.last().unwrap().clone();
    let queued = webhooks(&app)
        .redeliver_webhook(authed(
            pb::RedeliverWebhookRequest {
                endpoint_id: endpoint.id.clone(),
                delivery_id: oldest.id.clone(),
            },
            acme.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queued.id, oldest.id);
    let accepted = receiver.wait_for_accepted(4).await;
    assert_eq!(accepted[3].id, oldest.event_id);
    assert!(signed_by(&accepted[3], &created.signing_secret));
    let redelivered = |log: &[pb::WebhookDelivery]| {
        log.iter()
            .any(|entry| entry.id == oldest.id && entry.attempts > oldest.attempts)
    };
    let entry = log_when(&app, acme.token(), &endpoint.id, redelivered)
        .await
        .into_iter()
        .find(|entry| entry.id == oldest.id)
        .unwrap();
    assert_eq!(entry.attempts, oldest.attempts + 1);
    assert_eq!(status(&entry), pb::WebhookDeliveryStatus::Delivered);
    // A delivery of another endpoint is not found through this one.
    let unknown = webhooks(&app)
        .redeliver_webhook(authed(
            pb::RedeliverWebhookRequest {
                endpoint_id: endpoint.id.clone(),
                delivery_id: uuid::Uuid::now_v7().to_string(),
            },
            acme.token(),
        ))
        .await;
    expect_code(unknown, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_event_once() {
    let app = spawn_app_with(&[LOOPBACK]).await;
    let replica = app.replica().await;
    let receiver = Receiver::start().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    create_endpoint(&app, acme.token(), &receiver.url(), &["user.created"])
        .await
        .unwrap();
    // Changes on both replicas, at once.
    let (a, b) = tokio::join!(
        async {
            for i in 0..10 {
                pending(&app, acme.token(), &format!("a{i}@acme.test"), &["REPORTS"]).await;
            }
        },
        async {
            for i in 0..10 {
                pending(
                    &replica,
                    acme.token(),
                    &format!("b{i}@acme.test"),
                    &["REPORTS"],
                )
                .await;
            }
        }
    );
    let ((), ()) = (a, b);
    let accepted = receiver.wait_for_accepted(20).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = receiver.received();
    let ids: HashSet<&str> = received.iter().map(|request| request.id.as_str()).collect();
    assert_eq!(
        (received.len(), ids.len()),
        (20, 20),
        "an event was sent twice"
    );
    let cursors: Vec<i64> = accepted.iter().map(Received::cursor).collect();
    assert!(
        cursors.windows(2).all(|pair| pair[0] < pair[1]),
        "{cursors:?}"
    );
}
