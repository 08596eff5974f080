//! `roster.v1.SecurityService`.

use tonic::{Request, Response, Status};

use super::{ApiContext, pb};
use crate::model::UserId;

/// The SecurityService implementation.
#[derive(Clone)]
pub struct SecurityApi {
    ctx: ApiContext,
}

impl SecurityApi {
    /// Serves SecurityService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl pb::security_service_server::SecurityService for SecurityApi {
    async fn unlock_user(
        &self,
        request: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let user_id = UserId::parse("user_id", &request.get_ref().user_id)?;
        let user = self
            .ctx
            .app
            .unlock_user(&principal, user_id, &client)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn get_security_settings(
        &self,
        request: Request<pb::GetSecuritySettingsRequest>,
    ) -> Result<Response<pb::SecuritySettings>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let require_two_factor = self.ctx.app.security_settings(&principal).await?;
        Ok(Response::new(pb::SecuritySettings { require_two_factor }))
    }

    async fn update_security_settings(
        &self,
        request: Request<pb::UpdateSecuritySettingsRequest>,
    ) -> Result<Response<pb::SecuritySettings>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let require_two_factor = match request.get_ref().require_two_factor {
            Some(required) => {
                self.ctx
                    .app
                    .set_two_factor_requirement(&principal, required, &client)
                    .await?
            }
            None => self.ctx.app.security_settings(&principal).await?,
        };
        Ok(Response::new(pb::SecuritySettings { require_two_factor }))
    }
}
