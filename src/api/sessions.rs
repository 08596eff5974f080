//! `roster.v1.SessionService`.

use tonic::{Request, Response, Status};

use super::{ApiContext, convert::timestamp, paging, pb};
use crate::{
    domain::sessions::SessionsOf,
    model::{Error, Principal, SessionId, SessionRecord, UserId, Violations},
};

/// The SessionService implementation.
#[derive(Clone)]
pub struct SessionApi {
    ctx: ApiContext,
}

impl SessionApi {
    /// Serves SessionService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

const CURSOR: &str = "session";

fn session(record: SessionRecord, principal: &Principal) -> pb::Session {
    pb::Session {
        session_id: record.id.to_string(),
        user_id: record.user_id.to_string(),
        client_address: record.client.address.unwrap_or_default(),
        user_agent: record.client.user_agent.unwrap_or_default(),
        created_at: Some(timestamp(record.created_at)),
        last_used_at: Some(timestamp(record.last_used_at)),
        expires_at: Some(timestamp(record.expires_at)),
        current: record.id == principal.session_id,
    }
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for SessionApi {
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let user_id = if request.user_id.trim().is_empty() {
            None
        } else {
            violations.check(UserId::parse("user_id", &request.user_id))
        };
        if request.all_users && user_id.is_some() {
            violations.check::<()>(Err(Error::invalid(
                "user_id",
                "must be empty when all_users is set",
            )));
        }
        let page_size = violations.check(paging::page_size("page_size", request.page_size));
        let after = violations.check(paging::decode("page_token", CURSOR, &request.page_token));
        violations.finish()?;
        let of = match (request.all_users, user_id) {
            (true, _) => SessionsOf::Account,
            (false, Some(user_id)) => SessionsOf::User(user_id),
            (false, None) => SessionsOf::Caller,
        };
        let page = self
            .ctx
            .app
            .list_sessions(
                &principal,
                of,
                page_size.unwrap_or(paging::DEFAULT_PAGE_SIZE),
                after.flatten().map(SessionId),
            )
            .await?;
        let next_page_token = match (page.more, page.sessions.last()) {
            (true, Some(last)) => paging::encode(CURSOR, last.id.0),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: page
                .sessions
                .into_iter()
                .map(|record| session(record, &principal))
                .collect(),
            next_page_token,
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let session_id = SessionId::parse("session_id", &request.get_ref().session_id)?;
        self.ctx
            .app
            .revoke_session(&principal, session_id, &client)
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let user_id = UserId::parse("user_id", &request.get_ref().user_id)?;
        let ended = self
            .ctx
            .app
            .revoke_user_sessions(&principal, user_id, &client)
            .await?;
        Ok(Response::new(pb::RevokeUserSessionsResponse {
            sessions_ended: i64::try_from(ended).unwrap_or(i64::MAX),
        }))
    }

    async fn revoke_all_sessions(
        &self,
        request: Request<pb::RevokeAllSessionsRequest>,
    ) -> Result<Response<pb::RevokeAllSessionsResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let ended = self
            .ctx
            .app
            .revoke_all_sessions(&principal, &client)
            .await?;
        Ok(Response::new(pb::RevokeAllSessionsResponse {
            sessions_ended: i64::try_from(ended).unwrap_or(i64::MAX),
        }))
    }
}
