//! What replicas sharing one database tell each other, and how committed activity reaches the
//! live feed.
//!
//! - PostgreSQL: revocations are NOTIFYed on `roster_revocations` inside the transaction that
//!   makes them ([`App::commit`]), so they are delivered exactly at its commit, even when
//!   the replica dies a moment later; role grants right after their commit; activity records are NOTIFYed on `roster_activity` inside their own transaction (so
//!   at commit). Every replica LISTENs on a dedicated connection and applies what it hears within
//!   milliseconds. After a lost connection it catches up on revocations from the tables, and it
//!   does so every [`RESYNC_EVERY`] anyway, in case a notification was lost.
//! - SQLite (one process): the feed tails the activity table after each write; one connection
//!   serialises the transactions, so ids grow in commit order and the tail misses nothing.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{
    App,
    tokens::{CurrentGrant, RevocationEvent, Revocations},
};
use crate::{
    model::{ActivityRecord, Result, SessionId, TenantId, UserId},
    store::{
        self, Store, Touched,
        activity::Announcement,
        notify::{self, Listener, Notification},
    },
};

/// How often revocations are read back from the tables as a safety net.
pub const RESYNC_EVERY: Duration = Duration::from_secs(15);
/// Records read from the table per tail query (SQLite).
const TAIL_BATCH: u64 = 500;
/// Ids in one revocation notification (keeps payloads under PostgreSQL's 8,000 bytes).
const IDS_PER_MESSAGE: usize = 120;
/// Users in one grant notification, which also carries the roles and permissions.
const GRANTEES_PER_MESSAGE: usize = 60;

/// Loads the revocations younger than `since` into `revocations` (at start, and to catch up).
pub async fn load_revocations(
    store: &Store,
    revocations: &Revocations,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    let db = store.db();
    let mut sessions: Vec<(SessionId, DateTime<Utc>)> =
        store::sessions::revoked_since(db, since).await?;
    sessions.sort_by_key(|(_, at)| *at);
    for (session, at) in sessions {
        revocations.apply(RevocationEvent::Sessions(vec![session], at));
    }
    for (user, generation, at) in store::users::tokens_revoked_since(db, since).await? {
        revocations.apply(RevocationEvent::Users(vec![(user, generation)], at));
    }
    let deleted = store::activity::targets_since(db, "user.deleted", since).await?;
    revocations.apply(RevocationEvent::Users(
        deleted
            .into_iter()
            .map(|user| (UserId(user), i64::MAX))
            .collect(),
        now,
    ));
    Ok(())
}

/// A revocation notification (short names keep payloads small).
#[derive(Debug, Serialize, Deserialize)]
struct RevocationMessage {
    /// The replica that made it (which ignores its own).
    o: Uuid,
    /// Milliseconds since the epoch.
    at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    s: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    u: Vec<(Uuid, i64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    g: Option<GrantMessage>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GrantMessage {
    /// The first user given the grant (the one replicas of earlier versions read).
    u: Uuid,
    /// The other users given the same grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    m: Vec<Uuid>,
    r: Vec<String>,
    p: Vec<String>,
    o: bool,
}

/// How this replica's notifications begin (`o`, the origin, is serialized first).
fn own_prefix(origin: Uuid) -> String {
    format!("{{\"o\":\"{origin}\"")
}

/// The notifications that carry `event` (several when it names many sessions or users).
pub(crate) fn encode(origin: Uuid, event: &RevocationEvent) -> Vec<String> {
    let message = |at: &DateTime<Utc>| RevocationMessage {
        o: origin,
        at: at.timestamp_millis(),
        s: Vec::new(),
        u: Vec::new(),
        g: None,
    };
    let messages: Vec<RevocationMessage> = match event {
        RevocationEvent::Sessions(sessions, at) => sessions
            .chunks(IDS_PER_MESSAGE)
            .map(|chunk| RevocationMessage {
                s: chunk.iter().map(|session| session.0).collect(),
                ..message(at)
            })
            .collect(),
        RevocationEvent::Users(users, at) => users
            .chunks(IDS_PER_MESSAGE)
            .map(|chunk| RevocationMessage {
                u: chunk
                    .iter()
                    .map(|(user, generation)| (user.0, *generation))
                    .collect(),
                ..message(at)
            })
            .collect(),
        RevocationEvent::Grants(users, grant) => users
            .chunks(GRANTEES_PER_MESSAGE)
            .map(|chunk| RevocationMessage {
                g: Some(GrantMessage {
                    u: chunk[0].0,
                    m: chunk[1..].iter().map(|user| user.0).collect(),
                    r: grant.roles.clone(),
                    p: grant.permissions.clone(),
                    o: grant.is_owner,
                }),
                ..message(&grant.at)
            })
            .collect(),
    };
    messages
        .iter()
        .filter_map(|message| serde_json::to_string(message).ok())
        .collect()
}

/// The events of a notification, unless this replica sent it.
fn decode(origin: Uuid, payload: &str) -> Vec<RevocationEvent> {
    // The origin is the first field written: this replica's own notifications (every one of a
    // mass action's hundreds) are passed over without parsing their ids.
    if payload.starts_with(&own_prefix(origin)) {
        return Vec::new();
    }
    let Ok(message) = serde_json::from_str::<RevocationMessage>(payload) else {
        tracing::warn!("unreadable revocation notification");
        return Vec::new();
    };
    if message.o == origin {
        return Vec::new();
    }
    let Some(at) = DateTime::from_timestamp_millis(message.at) else {
        return Vec::new();
    };
    let lag = (Utc::now() - at).to_std().unwrap_or_default();
    crate::metrics::replication_lag().record(lag.as_secs_f64(), &[]);
    let mut events = Vec::new();
    if !message.s.is_empty() {
        events.push(RevocationEvent::Sessions(
            message.s.into_iter().map(SessionId).collect(),
            at,
        ));
    }
    if !message.u.is_empty() {
        events.push(RevocationEvent::Users(
            message
                .u
                .into_iter()
                .map(|(user, generation)| (UserId(user), generation))
                .collect(),
            at,
        ));
    }
    if let Some(grant) = message.g {
        let users = std::iter::once(grant.u)
            .chain(grant.m)
            .map(UserId)
            .collect();
        events.push(RevocationEvent::Grants(
            users,
            CurrentGrant {
                roles: grant.r,
                permissions: grant.p,
                is_owner: grant.o,
                at,
            },
        ));
    }
    events
}

/// The PostgreSQL side of a replica: a listener connected (and listening) before the server
/// serves, and the tasks that run it.
pub struct PostgresReplication {
    listener: Listener,
    origin: Uuid,
    outgoing: mpsc::UnboundedReceiver<RevocationEvent>,
}

impl std::fmt::Debug for PostgresReplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReplication")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PostgresReplication {
    /// Connects the listener to `url` and routes this replica's revocations to it.
    pub async fn connect(app: &App, url: &str) -> Result<Self> {
        let listener = Listener::connect(url).await?;
        let (publisher, outgoing) = mpsc::unbounded_channel();
        let origin = Uuid::new_v4();
        app.tokens.revocations().set_publisher(publisher);
        app.tokens.revocations().set_origin(origin);
        Ok(Self {
            listener,
            origin,
            outgoing,
        })
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, app: App, stop: watch::Receiver<bool>) {
        let Self {
            listener,
            origin,
            outgoing,
        } = self;
        let publisher = tokio::spawn(publish(app.clone(), origin, outgoing, stop.clone()));
        listen(app, listener, origin, stop).await;
        let _ = publisher.await;
    }
}

/// NOTIFYs this replica's revocations, in order, as they are made.
async fn publish(
    app: App,
    origin: Uuid,
    mut outgoing: mpsc::UnboundedReceiver<RevocationEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = outgoing.recv() => event,
            _ = stop.changed() => return,
        };
        let Some(event) = event else { return };
        let payloads = encode(origin, &event);
        // A failure is retried a few times; the other replicas' periodic catch-up covers the
        // rest. One statement sends them all (they are delivered together, at its commit).
        for attempt in 0..3u64 {
            match notify::notify_all(app.store.db(), notify::REVOCATION_CHANNEL, payloads.clone())
                .await
            {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "revocation notification failed");
                    tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                }
            }
        }
    }
}

async fn listen(app: App, mut listener: Listener, origin: Uuid, mut stop: watch::Receiver<bool>) {
    let revocations = app.tokens.revocations().clone();
    let mut synced_at = app.clock.now();
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.tick().await;
    loop {
        let received = tokio::select! {
            received = listener.recv() => received,
            _ = resync.tick() => {
                synced_at = catch_up(&app, &revocations, synced_at).await;
                continue;
            }
            _ = stop.changed() => return,
        };
        match received {
            Ok(Some(Notification { channel, payload })) => {
                // Every state change announces an activity record at its commit (and some a
                // revocation), so either one tells this replica's caches that the database has
                // moved on; an activity record also says for whom.
                if channel == notify::ACTIVITY_CHANNEL {
                    deliver(&app, &payload).await;
                } else if channel == notify::EVENTS_CHANNEL {
                    app.events.ring();
                } else if channel == notify::SERVICE_ACCOUNTS_CHANNEL {
                    let account = uuid::Uuid::parse_str(&payload)
                        .ok()
                        .map(crate::model::ServiceAccountId);
                    app.api_keys.forget(account);
                } else {
                    app.store.writes().advance();
                    if channel == notify::REVOCATION_CHANNEL {
                        for event in decode(origin, &payload) {
                            revocations.apply(event);
                        }
                    }
                }
            }
            Ok(None) => {
                tracing::warn!("postgres listener reconnected; catching up on revocations");
                app.api_keys.forget(None);
                synced_at = catch_up(&app, &revocations, synced_at).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "postgres listener failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                synced_at = catch_up(&app, &revocations, synced_at).await;
            }
        }
    }
}

/// Reads back revocations and role changes made since `since` (with a margin for clock skew
/// between replicas); returns the instant to catch up from next time.
async fn catch_up(app: &App, revocations: &Revocations, since: DateTime<Utc>) -> DateTime<Utc> {
    let now = app.clock.now();
    let from = since - chrono::Duration::seconds(30);
    let caught_up = async {
        load_revocations(&app.store, revocations, from, now).await?;
        catch_up_on_grants(app, revocations, from).await
    };
    match caught_up.await {
        Ok(()) => now,
        Err(err) => {
            tracing::warn!(error = %err, "catching up on revocations failed");
            since
        }
    }
}

/// Re-reads the roles of the users whose roles changed since `from` and whose change no grant
/// here covers yet (at start, all of them; later, those whose notification was lost): grants
/// made on another replica carry its time of the change or later, so the users heard of are
/// passed over.
pub async fn catch_up_on_grants(
    app: &App,
    revocations: &Revocations,
    from: DateTime<Utc>,
) -> Result<()> {
    let mut missed: HashMap<TenantId, Vec<UserId>> = HashMap::new();
    for (tenant, user, changed_at) in
        store::users::roles_changed_since(app.store.db(), from).await?
    {
        if revocations
            .granted_at(user)
            .is_none_or(|granted| granted < changed_at)
        {
            missed.entry(tenant).or_default().push(user);
        }
    }
    for (tenant, users) in missed {
        tracing::info!(tenant_id = %tenant, users = users.len(), "role changes read back");
        app.reload_grants(tenant, &users).await?;
    }
    Ok(())
}

/// Hands an announced record to this replica's watchers.
async fn deliver(app: &App, payload: &str) {
    let record = match store::activity::parse_payload(payload) {
        Ok(Announcement::Record(record)) => record,
        Ok(Announcement::Reference(id)) => match store::activity::get(app.store.db(), id).await {
            Ok(Some(record)) => record,
            Ok(None) => return app.store.writes().advance(),
            Err(err) => {
                tracing::warn!(error = %err, "reading an announced activity record failed");
                return app.store.writes().advance();
            }
        },
        Err(err) => {
            tracing::warn!(error = %err, "unreadable activity notification");
            return app.store.writes().advance();
        }
    };
    app.store.writes().advance_touching(touched_by(&record));
    app.feed.publish(Arc::new(record));
}

/// Actions whose transaction changes nothing but their target user (their row, sessions and
/// tokens): a sign-in elsewhere leaves the cached rest of the account alone.
const USER_ONLY_ACTIONS: &[&str] = &[
    "auth.login",
    "auth.session_refreshed",
    "auth.refresh_token_reused",
    "auth.logout",
    "user.created",
    "user.activated",
];

/// What the change an activity record announces may have touched.
fn touched_by(record: &ActivityRecord) -> Touched {
    match record.target_id {
        Some(target) if USER_ONLY_ACTIONS.contains(&record.action.as_str()) => {
            Touched::Users(record.tenant_id, vec![UserId(target)])
        }
        _ => Touched::Tenant(record.tenant_id),
    }
}

/// The in-process feed on SQLite: tails the activity table after each write (and every second,
/// for records written in bulk), while anyone watches. While nobody does it reads nothing, and
/// resumes where the first new watch drew its line.
pub async fn tail_sqlite(app: App, mut stop: watch::Receiver<bool>) {
    let db = app.store.db();
    let mut cursor: Option<Uuid> = None;
    let mut idle = true;
    loop {
        tokio::select! {
            _ = app.feed.woken() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        if !app.feed.has_watchers() {
            idle = true;
            continue;
        }
        if let Some(resume) = app.feed.take_resume_point()
            && idle
        {
            cursor = resume;
        }
        idle = false;
        loop {
            match store::activity::tail(db, cursor, TAIL_BATCH).await {
                Ok(records) => {
                    let full = records.len() as u64 == TAIL_BATCH;
                    for record in records {
                        cursor = Some(record.id);
                        app.feed.publish(Arc::new(record));
                    }
                    if !full {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "activity tail failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_survive_their_notifications_and_big_ones_are_split() {
        let here = Uuid::new_v4();
        let there = Uuid::new_v4();
        let at = DateTime::from_timestamp_millis(1_790_000_000_000).unwrap();
        let sessions: Vec<SessionId> = (0..300).map(|_| SessionId::new()).collect();
        let event = RevocationEvent::Sessions(sessions.clone(), at);
        let payloads = encode(here, &event);
        assert_eq!(payloads.len(), 3);
        assert!(payloads.iter().all(|p| p.len() < notify::MAX_PAYLOAD));
        let decoded: Vec<SessionId> = payloads
            .iter()
            .flat_map(|p| decode(there, p))
            .flat_map(|event| match event {
                RevocationEvent::Sessions(ids, when) => {
                    assert_eq!(when, at);
                    ids
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(decoded, sessions);
        // A replica ignores what it sent itself, without parsing it.
        assert!(payloads.iter().all(|p| p.starts_with(&own_prefix(here))));
        assert!(decode(here, &payloads[0]).is_empty());

        let user = UserId::new();
        let grant = RevocationEvent::Grants(
            vec![user],
            CurrentGrant {
                roles: vec!["REPORTS".into()],
                permissions: vec!["reports.run".into()],
                is_owner: false,
                at,
            },
        );
        assert_eq!(decode(there, &encode(here, &grant)[0]), vec![grant]);

        // A mass change: one grant for many users, in messages of a bounded size.
        let grantees: Vec<UserId> = (0..150).map(|_| UserId::new()).collect();
        let everything: Vec<String> = crate::model::ALL_PERMISSIONS
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect();
        let grant = CurrentGrant {
            roles: (0..20)
                .map(|i| format!("custom_role_with_a_long_key_{i:02}"))
                .collect(),
            permissions: everything,
            is_owner: false,
            at,
        };
        let payloads = encode(
            here,
            &RevocationEvent::Grants(grantees.clone(), grant.clone()),
        );
        assert_eq!(payloads.len(), 3);
        assert!(payloads.iter().all(|p| p.len() < notify::MAX_PAYLOAD));
        let mut received = Vec::new();
        for event in payloads.iter().flat_map(|p| decode(there, p)) {
            match event {
                RevocationEvent::Grants(users, got) => {
                    assert_eq!(got, grant);
                    received.extend(users);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, grantees);
        let users = RevocationEvent::Users(vec![(user, 7)], at);
        assert_eq!(decode(there, &encode(here, &users)[0]), vec![users]);
    }
}
