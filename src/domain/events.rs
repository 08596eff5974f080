//! `roster.v1.EventService`: the durable event feed. Every change other services act on writes
//! its events in its own transaction (see [`super::change`]); a consumer lists or watches them
//! after a cursor and, coming back with its last cursor, receives every event it missed, in
//! commit order ([`store::events`] explains why none is ever skipped).

use std::{collections::VecDeque, time::Duration};

use tokio::sync::watch;

use super::{App, policy, policy::Action};
use crate::{
    model::{Error, Event, EventFilter, Principal, Result, TenantId},
    store,
};

/// How often a watch looks for events without being woken (a lost notification costs this).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Events a watch reads per query.
const WATCH_BATCH: u64 = 1_000;
/// How often expired events are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Rings when events were committed on this replica or announced by another one.
#[derive(Debug)]
pub struct EventBell {
    rung: watch::Sender<u64>,
}

impl Default for EventBell {
    fn default() -> Self {
        Self {
            rung: watch::channel(0).0,
        }
    }
}

impl EventBell {
    /// Wakes every watch.
    pub fn ring(&self) {
        self.rung
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.rung.subscribe()
    }
}

/// A page of the feed.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where to resume: the last event returned, or, when the feed was read to its end, the end
    /// (past events the filter passed over).
    pub cursor: i64,
}

/// What a watch hands out next.
#[derive(Debug, Clone)]
pub enum WatchItem {
    Event(Event),
    /// The watch read up to this cursor and the filter passed over what it found there.
    Progress(i64),
}

/// A live watch of an account's feed, from a cursor.
pub struct EventWatch {
    app: App,
    tenant_id: TenantId,
    access_token: String,
    filter: EventFilter,
    cursor: i64,
    /// The cursor last reported to the consumer.
    reported: i64,
    pending: VecDeque<Event>,
    bell: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
}

impl EventWatch {
    /// The next item; `Ok(None)` when the server shuts down, an error when the token expired or
    /// its session ended, or the database cannot be read (the consumer resumes from its cursor).
    pub async fn next(&mut self) -> Result<Option<WatchItem>> {
        loop {
            self.app.authenticate(&self.access_token).await?;
            if *self.closing.borrow() {
                return Ok(None);
            }
            if let Some(event) = self.pending.pop_front() {
                self.reported = event.cursor;
                return Ok(Some(WatchItem::Event(event)));
            }
            // Marked seen before reading: a ring during the read wakes the wait below.
            self.bell.borrow_and_update();
            let page = self
                .app
                .read_events(self.tenant_id, Some(self.cursor), &self.filter, WATCH_BATCH)
                .await?;
            self.cursor = page.cursor;
            if !page.events.is_empty() {
                self.pending.extend(page.events);
                continue;
            }
            if self.cursor > self.reported {
                self.reported = self.cursor;
                return Ok(Some(WatchItem::Progress(self.cursor)));
            }
            tokio::select! {
                _ = self.bell.changed() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = self.closing.changed() => return Ok(None),
            }
        }
    }
}

impl App {
    /// Up to `page_size` events of the caller's account after `after` (from the oldest kept
    /// when `None`), matching `filter`.
    pub async fn list_events(
        &self,
        principal: &Principal,
        after: Option<i64>,
        filter: &EventFilter,
        page_size: u64,
    ) -> Result<EventPage> {
        policy::authorize(principal, Action::ReadEvents)?;
        self.read_events(principal.tenant_id, after, filter, page_size)
            .await
    }

    /// Watches the caller's account's feed: first everything after `after`, then each event as
    /// it commits. `access_token` is the one `principal` came from.
    pub async fn watch_events(
        &self,
        principal: &Principal,
        access_token: &str,
        after: Option<i64>,
        filter: EventFilter,
    ) -> Result<EventWatch> {
        policy::authorize(principal, Action::ReadEvents)?;
        // Checked now, so that a bad cursor is the call's answer rather than the stream's end.
        let (pruned, head) = store::events::bounds(self.store.db(), principal.tenant_id).await?;
        let cursor = resume_point(after, pruned, head)?;
        Ok(EventWatch {
            app: self.clone(),
            tenant_id: principal.tenant_id,
            access_token: access_token.to_owned(),
            filter,
            cursor,
            reported: cursor,
            pending: VecDeque::new(),
            bell: self.events.subscribe(),
            closing: self.feed.closing(),
        })
    }

    async fn read_events(
        &self,
        tenant_id: TenantId,
        after: Option<i64>,
        filter: &EventFilter,
        limit: u64,
    ) -> Result<EventPage> {
        let db = self.store.db();
        // The end first: every event up to it has committed (they commit with the counter).
        let (pruned, head) = store::events::bounds(db, tenant_id).await?;
        let after = resume_point(after, pruned, head)?;
        let events = store::events::list(db, tenant_id, after, head, filter, limit).await?;
        let cursor = match events.last() {
            Some(last) if events.len() as u64 == limit => last.cursor,
            _ => head,
        };
        Ok(EventPage { events, cursor })
    }
}

/// Where reading resumes for a consumer's `after`, or why it cannot.
fn resume_point(after: Option<i64>, pruned: i64, head: i64) -> Result<i64> {
    match after {
        None => Ok(pruned),
        Some(after) if after < pruned => Err(Error::OutOfRange {
            reason: "CURSOR_EXPIRED",
            message: format!(
                "the events after cursor {after} are no longer kept; the oldest cursor to resume \
                 after is {pruned}"
            ),
            metadata: vec![("oldest_cursor", pruned.to_string())],
        }),
        Some(after) if after > head => Err(Error::invalid(
            "after",
            format!("is beyond the end of this account's feed ({head})"),
        )),
        Some(after) => Ok(after),
    }
}

/// Deletes the events older than the retention period, at start and every hour.
pub async fn prune_events(app: App, mut stop: watch::Receiver<bool>) {
    loop {
        let before = app.clock.now() - app.policies.event_retention;
        match store::events::prune(app.store.db(), before).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired events deleted"),
            Err(err) => tracing::warn!(error = %err, "deleting expired events failed"),
        }
        // Webhook log entries go with their events.
        match store::webhooks::prune_deliveries(app.store.db(), before).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired webhook log entries deleted"),
            Err(err) => tracing::warn!(error = %err, "deleting expired webhook log entries failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_resumes_inside_the_kept_span_only() {
        assert_eq!(resume_point(None, 0, 0).unwrap(), 0);
        assert_eq!(resume_point(None, 40, 90).unwrap(), 40);
        assert_eq!(resume_point(Some(40), 40, 90).unwrap(), 40);
        assert_eq!(resume_point(Some(90), 40, 90).unwrap(), 90);
        assert!(matches!(
            resume_point(Some(39), 40, 90),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            resume_point(Some(91), 40, 90),
            Err(Error::InvalidArgument(_))
        ));
    }
}
