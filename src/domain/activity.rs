//! The activity trail: filtered keyset listing, and the live feed that admins watch.
//!
//! The feed is a bounded broadcast channel per account. Writers never wait for watchers: a
//! watcher that falls more than [`FEED_CAPACITY`] records behind skips ahead and is told how many
//! it missed. Records reach the feed after their transaction commits, from every replica: on
//! PostgreSQL through LISTEN/NOTIFY, on SQLite by tailing the table in-process (see
//! [`super::replication`]).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::{Notify, broadcast, watch};

use super::{
    App,
    policy::{self, Action, authorize},
};
use crate::{
    model::{ActivityFilter, ActivityRecord, Error, Principal, Result, TenantId},
    store,
};

/// Records a watcher may fall behind before it skips ahead.
pub const FEED_CAPACITY: usize = 256;

/// The live feed of this replica: one broadcast channel per account being watched.
#[derive(Debug)]
pub struct ActivityFeed {
    channels: RwLock<HashMap<TenantId, broadcast::Sender<Arc<ActivityRecord>>>>,
    /// Rung after a record is written here (the SQLite tailer reads it after the commit).
    wake: Notify,
    /// Where the SQLite tailer resumes after a time without watchers: the oldest "history ends
    /// here" mark of the watches that began meanwhile (`Some(None)`: the table was empty).
    resume_after: std::sync::Mutex<Option<Option<uuid::Uuid>>>,
    /// Turns true when the server shuts down: watches end so that shutdown is not held up.
    closing: watch::Sender<bool>,
}

impl Default for ActivityFeed {
    fn default() -> Self {
        Self {
            channels: RwLock::default(),
            wake: Notify::new(),
            resume_after: std::sync::Mutex::default(),
            closing: watch::channel(false).0,
        }
    }
}

impl ActivityFeed {
    /// Turns true when the server shuts down (every live stream ends then).
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Hands a committed record to the account's watchers; never waits.
    pub fn publish(&self, record: Arc<ActivityRecord>) {
        let sender = self
            .channels
            .read()
            .ok()
            .and_then(|channels| channels.get(&record.tenant_id).cloned());
        if let Some(sender) = sender {
            // An error only means that nobody watches any more.
            let _ = sender.send(record);
        }
    }

    /// Whether anyone on this replica watches any account.
    pub fn has_watchers(&self) -> bool {
        self.channels
            .read()
            .map(|channels| channels.values().any(|sender| sender.receiver_count() > 0))
            .unwrap_or(false)
    }

    fn subscribe(&self, tenant_id: TenantId) -> Result<broadcast::Receiver<Arc<ActivityRecord>>> {
        let mut channels = self
            .channels
            .write()
            .map_err(|_| Error::internal("activity feed lock poisoned"))?;
        // Drop channels nobody listens to any more while the lock is held anyway.
        channels.retain(|_, sender| sender.receiver_count() > 0);
        Ok(channels
            .entry(tenant_id)
            .or_insert_with(|| broadcast::channel(FEED_CAPACITY).0)
            .subscribe())
    }

    /// Notes that a watch began after the record `seen` (SQLite), so that an idle tailer resumes
    /// there rather than replaying what nobody watched.
    fn note_start(&self, seen: Option<uuid::Uuid>) {
        if let Ok(mut resume) = self.resume_after.lock() {
            *resume = Some(match *resume {
                Some(Some(earlier)) => seen.map(|seen| seen.min(earlier)),
                Some(None) => None,
                None => seen,
            });
        }
    }

    /// Where an idle tailer resumes (see [`ActivityFeed::note_start`]); `None` when no watch
    /// began while it was idle.
    pub fn take_resume_point(&self) -> Option<Option<uuid::Uuid>> {
        self.resume_after
            .lock()
            .ok()
            .and_then(|mut resume| resume.take())
    }

    /// Tells the in-process tailer that a record may have been written.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`ActivityFeed::wake`] is rung.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Ends every watch (server shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// A record just written.
    Record(Arc<ActivityRecord>),
    /// The watcher read too slowly and missed this many records.
    Dropped(u64),
}

/// One admin's live watch of their account's activity.
pub struct ActivityWatch {
    app: App,
    principal: Principal,
    /// The watcher's access token, checked again while the watch lasts.
    access_token: String,
    filter: ActivityFilter,
    /// Records up to this id had committed before the watch began (SQLite's in-process tail
    /// may still hand them out); they are skipped.
    seen: Option<uuid::Uuid>,
    records: broadcast::Receiver<Arc<ActivityRecord>>,
    closing: watch::Receiver<bool>,
}

impl std::fmt::Debug for ActivityWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityWatch")
            .field("tenant_id", &self.principal.tenant_id)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl ActivityWatch {
    /// The next event; `Ok(None)` when the server shuts down, an error when the watcher's token
    /// expired or its session ended (the stream then ends with that status).
    pub async fn next(&mut self) -> Result<Option<FeedEvent>> {
        loop {
            self.still_authorized().await?;
            if *self.closing.borrow() {
                return Ok(None);
            }
            let received = tokio::select! {
                received = self.records.recv() => received,
                _ = self.closing.changed() => return Ok(None),
                // Wake now and then to notice an expired token or an ended session.
                _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
            };
            match received {
                Ok(record)
                    if self.filter.matches(&record)
                        && self.seen.is_none_or(|seen| record.id > seen) =>
                {
                    return Ok(Some(FeedEvent::Record(record)));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Ok(Some(FeedEvent::Dropped(missed)));
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// The token must stay valid (not expired, its session and user not revoked) for the watch
    /// to go on.
    async fn still_authorized(&self) -> Result<()> {
        self.app.authenticate(&self.access_token).await.map(|_| ())
    }
}

/// A page of activity records.
#[derive(Debug, Clone)]
pub struct ActivityPage {
    pub records: Vec<ActivityRecord>,
    /// Whether more records follow the last one.
    pub more: bool,
}

impl App {
    /// Records of the caller's account matching `filter`, newest first. Without activity.read the
    /// caller sees only the records by or about themself.
    pub async fn list_activity(
        &self,
        principal: &Principal,
        mut filter: ActivityFilter,
        page_size: u64,
        after: Option<uuid::Uuid>,
    ) -> Result<ActivityPage> {
        if !policy::reads_account_activity(principal)? {
            filter.involving = Some(principal.user_id);
        }
        let mut records = store::activity::list(
            self.store.db(),
            principal.tenant_id,
            &filter,
            after,
            page_size + 1,
        )
        .await?;
        let more = records.len() as u64 > page_size;
        records.truncate(page_size as usize);
        Ok(ActivityPage { records, more })
    }

    /// Starts a live watch of the caller's account (activity.read); `access_token` is the one
    /// `principal` came from.
    pub async fn watch_activity(
        &self,
        principal: &Principal,
        access_token: &str,
        filter: ActivityFilter,
    ) -> Result<ActivityWatch> {
        authorize(principal, Action::ReadActivity)?;
        // On SQLite ids grow in commit order: whatever exists now is history, not news. (On
        // PostgreSQL ids come from several replicas' clocks, so no such line can be drawn; the
        // feed there carries only what is announced after the subscription.)
        let seen = if self.store.is_postgres() {
            None
        } else {
            let seen = store::activity::latest_id(self.store.db()).await?;
            self.feed.note_start(seen);
            seen
        };
        Ok(ActivityWatch {
            seen,
            app: self.clone(),
            principal: principal.clone(),
            access_token: access_token.to_owned(),
            filter,
            records: self.feed.subscribe(principal.tenant_id)?,
            closing: self.feed.closing.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClientInfo;

    fn record(tenant_id: TenantId, action: &str) -> Arc<ActivityRecord> {
        Arc::new(ActivityRecord {
            id: uuid::Uuid::now_v7(),
            tenant_id,
            actor: None,
            action: action.into(),
            target_type: None,
            target_id: None,
            client: ClientInfo::default(),
            details: serde_json::json!({}),
            created_at: chrono::Utc::now(),
        })
    }

    #[tokio::test]
    async fn a_slow_watcher_never_blocks_the_writer_and_learns_what_it_missed() {
        let feed = ActivityFeed::default();
        let tenant = TenantId::new();
        let mut slow = feed.subscribe(tenant).unwrap();
        let mut other = feed.subscribe(TenantId::new()).unwrap();
        // Far more than the channel holds: publishing returns at once every time.
        for _ in 0..FEED_CAPACITY * 4 {
            feed.publish(record(tenant, "auth.login"));
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                assert_eq!(missed as usize, FEED_CAPACITY * 3)
            }
            other => panic!("expected a lag, got {other:?}"),
        }
        assert!(slow.recv().await.is_ok());
        // Another account's watcher saw nothing.
        assert!(matches!(
            other.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
    }

    #[test]
    fn filters_match_actions_by_name_or_prefix() {
        let tenant = TenantId::new();
        let login = record(tenant, "auth.login");
        let filter = |actions: &[&str]| ActivityFilter {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        assert!(filter(&[]).matches(&login));
        assert!(filter(&["auth.login"]).matches(&login));
        assert!(filter(&["auth.*"]).matches(&login));
        assert!(!filter(&["user.*", "auth.logout"]).matches(&login));
    }
}
