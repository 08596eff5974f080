//! `roster.v1.TwoFactorService`.

use tonic::{Request, Response, Status};

use super::{ApiContext, convert::timestamp, pb};
use crate::model::{Error, UserId};

/// The TwoFactorService implementation.
#[derive(Clone)]
pub struct TwoFactorApi {
    ctx: ApiContext,
}

impl TwoFactorApi {
    /// Serves TwoFactorService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

/// A code field: required, at most 64 characters (digits or a backup code).
fn code(text: &str) -> Result<&str, Status> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid("code", "is required").into());
    }
    if text.len() > 64 {
        return Err(Error::invalid("code", "must be at most 64 characters").into());
    }
    Ok(text)
}

#[tonic::async_trait]
impl pb::two_factor_service_server::TwoFactorService for TwoFactorApi {
    async fn begin_two_factor_enrollment(
        &self,
        request: Request<pb::BeginTwoFactorEnrollmentRequest>,
    ) -> Result<Response<pb::BeginTwoFactorEnrollmentResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let enrollment = self.ctx.app.begin_two_factor_enrollment(&principal).await?;
        Ok(Response::new(pb::BeginTwoFactorEnrollmentResponse {
            secret: enrollment.secret_base32,
            otpauth_uri: enrollment.otpauth_uri,
            qr_code_png_base64: enrollment.qr_png_base64,
        }))
    }

    async fn confirm_two_factor(
        &self,
        request: Request<pb::ConfirmTwoFactorRequest>,
    ) -> Result<Response<pb::ConfirmTwoFactorResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let confirmed = self
            .ctx
            .app
            .confirm_two_factor(&principal, code(&request.code)?, &client)
            .await?;
        Ok(Response::new(pb::ConfirmTwoFactorResponse {
            backup_codes: confirmed.backup_codes,
            access_token: confirmed.access_token,
            access_token_expires_at: Some(timestamp(confirmed.access_token_expires_at)),
        }))
    }

    async fn disable_two_factor(
        &self,
        request: Request<pb::DisableTwoFactorRequest>,
    ) -> Result<Response<pb::DisableTwoFactorResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        self.ctx
            .app
            .disable_two_factor(&principal, code(&request.code)?, &client)
            .await?;
        Ok(Response::new(pb::DisableTwoFactorResponse {}))
    }

    async fn regenerate_backup_codes(
        &self,
        request: Request<pb::RegenerateBackupCodesRequest>,
    ) -> Result<Response<pb::RegenerateBackupCodesResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let backup_codes = self
            .ctx
            .app
            .regenerate_backup_codes(&principal, code(&request.code)?, &client)
            .await?;
        Ok(Response::new(pb::RegenerateBackupCodesResponse {
            backup_codes,
        }))
    }

    async fn get_two_factor_status(
        &self,
        request: Request<pb::GetTwoFactorStatusRequest>,
    ) -> Result<Response<pb::TwoFactorStatus>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let user_id = if request.user_id.trim().is_empty() {
            None
        } else {
            Some(UserId::parse("user_id", &request.user_id)?)
        };
        let status = self.ctx.app.two_factor_status(&principal, user_id).await?;
        Ok(Response::new(pb::TwoFactorStatus {
            user_id: status.user_id.to_string(),
            enabled: status.enabled,
            pending: status.pending,
            enabled_at: status.enabled_at.map(timestamp),
            backup_codes_remaining: i32::try_from(status.backup_codes_remaining)
                .unwrap_or(i32::MAX),
            required_by_account: status.required_by_account,
        }))
    }

    async fn reset_two_factor(
        &self,
        request: Request<pb::ResetTwoFactorRequest>,
    ) -> Result<Response<pb::ResetTwoFactorResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let user_id = UserId::parse("user_id", &request.get_ref().user_id)?;
        let ended = self
            .ctx
            .app
            .reset_two_factor(&principal, user_id, &client)
            .await?;
        Ok(Response::new(pb::ResetTwoFactorResponse {
            sessions_ended: i64::try_from(ended).unwrap_or(i64::MAX),
        }))
    }
}
