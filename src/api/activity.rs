//! `roster.v1.ActivityService`.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::{
    ApiContext,
    convert::{structure, timestamp},
    paging, pb,
};
use crate::{
    domain::activity::{ActivityWatch, FeedEvent},
    model::{ActivityFilter, ActivityRecord, Error, Result, UserId, Violations},
};

/// The ActivityService implementation.
#[derive(Clone)]
pub struct ActivityApi {
    ctx: ApiContext,
}

impl ActivityApi {
    /// Serves ActivityService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

const CURSOR: &str = "activity";
/// Action names in one filter, at most.
const MAX_ACTIONS: usize = 50;

/// A record as the API shows it.
pub fn record(record: ActivityRecord) -> pb::ActivityRecord {
    let by_service_account =
        record.details.get("actor_type") == Some(&serde_json::Value::from("service_account"));
    let actor = record.actor.map(|id| id.to_string()).unwrap_or_default();
    let (actor_user_id, actor_service_account_id) = if by_service_account {
        (String::new(), actor)
    } else {
        (actor, String::new())
    };
    pb::ActivityRecord {
        id: record.id.to_string(),
        actor_user_id,
        actor_service_account_id,
        action: record.action,
        target_type: record.target_type.unwrap_or_default(),
        target_id: record
            .target_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        client_address: record.client.address.unwrap_or_default(),
        user_agent: record.client.user_agent.unwrap_or_default(),
        details: structure(record.details),
        created_at: Some(timestamp(record.created_at)),
    }
}

/// Parses a filter; `prefix` names its field in violations.
fn filter(prefix: &str, filter: Option<pb::ActivityFilter>) -> Result<ActivityFilter> {
    let Some(filter) = filter else {
        return Ok(ActivityFilter::default());
    };
    let mut violations = Violations::default();
    let user = |field: &str, text: &str, violations: &mut Violations| {
        if text.trim().is_empty() {
            None
        } else {
            violations.check(UserId::parse(&format!("{prefix}.{field}"), text))
        }
    };
    let actor = user("actor_user_id", &filter.actor_user_id, &mut violations);
    let target = user("target_user_id", &filter.target_user_id, &mut violations);
    if filter.actions.len() > MAX_ACTIONS {
        violations.check::<()>(Err(Error::invalid(
            format!("{prefix}.actions"),
            format!("at most {MAX_ACTIONS} actions"),
        )));
    }
    let mut actions = Vec::new();
    for (i, action) in filter.actions.iter().enumerate() {
        let action = action.trim().to_lowercase();
        let name = action.strip_suffix('*').unwrap_or(&action);
        let ok = action.len() <= 64
            && !action.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
        if ok {
            actions.push(action);
        } else {
            violations.check::<()>(Err(Error::invalid(
                format!("{prefix}.actions[{i}]"),
                "must be an action name like auth.login, or a prefix ending in * like auth.*",
            )));
        }
    }
    let since = filter
        .since
        .as_ref()
        .and_then(|t| violations.check(paging::instant(&format!("{prefix}.since"), t)));
    let until = filter
        .until
        .as_ref()
        .and_then(|t| violations.check(paging::instant(&format!("{prefix}.until"), t)));
    violations.finish()?;
    Ok(ActivityFilter {
        actor,
        target: target.map(|user| user.0),
        involving: None,
        actions,
        since,
        until,
    })
}

/// The stream of a live watch.
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchActivityResponse, Status>> + Send>>;

fn watch_stream(watch: ActivityWatch) -> WatchStream {
    Box::pin(futures::stream::unfold(Some(watch), |state| async move {
        let mut watch = state?;
        match watch.next().await {
            Ok(Some(FeedEvent::Record(found))) => Some((
                Ok(pb::WatchActivityResponse {
                    record: Some(record(found.as_ref().clone())),
                    dropped: 0,
                }),
                Some(watch),
            )),
            Ok(Some(FeedEvent::Dropped(missed))) => Some((
                Ok(pb::WatchActivityResponse {
                    record: None,
                    dropped: i64::try_from(missed).unwrap_or(i64::MAX),
                }),
                Some(watch),
            )),
            Ok(None) => None,
            // The token expired or the session ended: end with that status.
            Err(err) => Some((Err(Status::from(err)), None)),
        }
    }))
}

#[tonic::async_trait]
impl pb::activity_service_server::ActivityService for ActivityApi {
    async fn list_activity(
        &self,
        request: Request<pb::ListActivityRequest>,
    ) -> Result<Response<pb::ListActivityResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let parsed = violations.check(filter("filter", request.filter));
        let page_size = violations.check(paging::page_size("page_size", request.page_size));
        let after = violations.check(paging::decode("page_token", CURSOR, &request.page_token));
        violations.finish()?;
        let page = self
            .ctx
            .app
            .list_activity(
                &principal,
                parsed.unwrap_or_default(),
                page_size.unwrap_or(paging::DEFAULT_PAGE_SIZE),
                after.flatten(),
            )
            .await?;
        let next_page_token = match (page.more, page.records.last()) {
            (true, Some(last)) => paging::encode(CURSOR, last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListActivityResponse {
            records: page.records.into_iter().map(record).collect(),
            next_page_token,
        }))
    }

    type WatchActivityStream = WatchStream;

    async fn watch_activity(
        &self,
        request: Request<pb::WatchActivityRequest>,
    ) -> Result<Response<Self::WatchActivityStream>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let token = self.ctx.bearer(&request).unwrap_or_default().to_owned();
        let mut parsed = filter("filter", request.into_inner().filter)?;
        // A live feed has no time range.
        parsed.since = None;
        parsed.until = None;
        let watch = self
            .ctx
            .app
            .watch_activity(&principal, &token, parsed)
            .await?;
        Ok(Response::new(watch_stream(watch)))
    }
}
