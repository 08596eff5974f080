//! `roster.v1.EventService`.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::{
    ApiContext,
    convert::{structure, timestamp},
    paging, pb,
};
use crate::{
    domain::events::{EventWatch, WatchItem},
    model::{Error, Event, EventFilter, Result, UserId, Violations},
};

/// The EventService implementation.
#[derive(Clone)]
pub struct EventApi {
    ctx: ApiContext,
}

impl EventApi {
    /// Serves EventService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

/// An event as the API shows it.
fn event(event: Event) -> pb::Event {
    let actor_user_id = actor_of(&event, false);
    let actor_service_account_id = actor_of(&event, true);
    pb::Event {
        cursor: event.cursor.to_string(),
        id: event.id.to_string(),
        tenant_id: event.tenant_id.to_string(),
        r#type: event.event_type,
        target_type: event.target_type.unwrap_or_default(),
        target_id: event.target_id.map(|id| id.to_string()).unwrap_or_default(),
        actor_user_id,
        actor_service_account_id,
        fields: structure(event.fields),
        occurred_at: Some(timestamp(event.created_at)),
    }
}

/// The event's actor id when it is of the kind asked (a service account or a user), else empty.
fn actor_of(event: &Event, service_account: bool) -> String {
    match event.actor {
        Some(actor) if event.actor_service_account == service_account => actor.to_string(),
        _ => String::new(),
    }
}

/// A cursor: empty for the start of the feed, otherwise decimal digits.
fn cursor(field: &str, text: &str) -> Result<Option<i64>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(value) if value >= 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(value)),
        _ => Err(Error::invalid(
            field,
            "is not a cursor of this feed (a cursor of an event, as given)",
        )),
    }
}

/// Parses a filter; `prefix` names its field in violations.
fn filter(prefix: &str, filter: Option<pb::EventFilter>) -> Result<EventFilter> {
    let filter = filter.unwrap_or_default();
    let mut violations = Violations::default();
    let types = violations.check(EventFilter::parse_types(
        &format!("{prefix}.types"),
        &filter.types,
    ));
    let target = if filter.target_id.trim().is_empty() {
        Some(None)
    } else {
        violations
            .check(UserId::parse(
                &format!("{prefix}.target_id"),
                &filter.target_id,
            ))
            .map(|id| Some(id.0))
    };
    violations.finish()?;
    Ok(EventFilter {
        types: types.unwrap_or_default(),
        target: target.flatten(),
    })
}

/// The stream of a watch.
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

fn watch_stream(watch: EventWatch) -> WatchStream {
    Box::pin(futures::stream::unfold(Some(watch), |state| async move {
        let mut watch = state?;
        match watch.next().await {
            Ok(Some(WatchItem::Event(found))) => Some((
                Ok(pb::WatchEventsResponse {
                    cursor: found.cursor.to_string(),
                    event: Some(event(found)),
                }),
                Some(watch),
            )),
            Ok(Some(WatchItem::Progress(cursor))) => Some((
                Ok(pb::WatchEventsResponse {
                    cursor: cursor.to_string(),
                    event: None,
                }),
                Some(watch),
            )),
            Ok(None) => None,
            // The token expired, the session ended or the database failed: end with that status.
            Err(err) => Some((Err(Status::from(err)), None)),
        }
    }))
}

#[tonic::async_trait]
impl pb::event_service_server::EventService for EventApi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let after = violations.check(cursor("after", &request.after));
        let parsed = violations.check(filter("filter", request.filter));
        let page_size = violations.check(paging::page_size("page_size", request.page_size));
        violations.finish()?;
        let page_size = page_size.unwrap_or(paging::DEFAULT_PAGE_SIZE);
        let page = self
            .ctx
            .app
            .list_events(
                &principal,
                after.flatten(),
                &parsed.unwrap_or_default(),
                page_size,
            )
            .await?;
        crate::metrics::events().read(page.events.len());
        Ok(Response::new(pb::ListEventsResponse {
            more: page.events.len() as u64 == page_size,
            next_cursor: page.cursor.to_string(),
            events: page.events.into_iter().map(event).collect(),
        }))
    }

    type WatchEventsStream = WatchStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let token = self.ctx.bearer(&request).unwrap_or_default().to_owned();
        let request = request.into_inner();
        let mut violations = Violations::default();
        let after = violations.check(cursor("after", &request.after));
        let parsed = violations.check(filter("filter", request.filter));
        violations.finish()?;
        let watch = self
            .ctx
            .app
            .watch_events(
                &principal,
                &token,
                after.flatten(),
                parsed.unwrap_or_default(),
            )
            .await?;
        Ok(Response::new(watch_stream(watch)))
    }
}
