//! `roster.v1.AuthService`.

use tonic::{Request, Response, Status};

use super::{ApiContext, convert::timestamp, pb};
use crate::{
    domain::{
        auth::SignUp,
        sign_in::{LoginOutcome, SessionTokens},
    },
    model::{
        AccountName, Email, Error, Login, Password, PersonName, Result, TenantRef, Violations,
    },
};

/// The AuthService implementation.
#[derive(Clone)]
pub struct AuthApi {
    ctx: ApiContext,
}

impl AuthApi {
    /// Serves AuthService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

impl TryFrom<pb::SignUpRequest> for SignUp {
    type Error = crate::model::Error;

    fn try_from(request: pb::SignUpRequest) -> Result<Self> {
        let mut violations = Violations::default();
        let account_name =
            violations.check(AccountName::parse("account_name", &request.account_name));
        let first_name = violations.check(PersonName::parse("first_name", &request.first_name));
        let last_name = violations.check(PersonName::parse("last_name", &request.last_name));
        let email = violations.check(Email::parse("email", &request.email));
        let password = violations.check(Password::parse("password", &request.password));
        violations.finish()?;
        match (account_name, first_name, last_name, email, password) {
            (
                Some(account_name),
                Some(first_name),
                Some(last_name),
                Some(email),
                Some(password),
            ) => Ok(SignUp {
                account_name,
                first_name,
                last_name,
                email,
                password,
            }),
            _ => Err(crate::model::Error::internal(
                "sign-up parse left a field unset",
            )),
        }
    }
}

impl From<SessionTokens> for pb::LoginResponse {
    fn from(tokens: SessionTokens) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            access_token_expires_at: Some(timestamp(tokens.access_token_expires_at)),
            user: Some(tokens.user.into()),
            session_id: tokens.session_id.to_string(),
            refresh_token_expires_at: Some(timestamp(tokens.refresh_token_expires_at)),
            second_factor_required: false,
            challenge: String::new(),
            challenge_expires_at: None,
            two_factor_enrollment_required: tokens.two_factor_enrollment_required,
        }
    }
}

impl From<LoginOutcome> for pb::LoginResponse {
    fn from(outcome: LoginOutcome) -> Self {
        match outcome {
            LoginOutcome::Session(tokens) => tokens.into(),
            // Nothing about the user until the second factor is in.
            LoginOutcome::SecondFactorRequired(challenge) => Self {
                second_factor_required: true,
                challenge: challenge.token,
                challenge_expires_at: Some(timestamp(challenge.expires_at)),
                ..Default::default()
            },
        }
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthApi {
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        self.ctx.limit_attempts(&request)?;
        let client = self.ctx.client(&request);
        let sign_up = SignUp::try_from(request.into_inner())?;
        let created = self.ctx.app.sign_up(sign_up, &client).await?;
        Ok(Response::new(pb::SignUpResponse {
            tenant_id: created.tenant.id.to_string(),
            tenant_slug: created.tenant.slug,
            user_id: created.user.id.to_string(),
        }))
    }

    async fn activate_account(
        &self,
        request: Request<pb::ActivateAccountRequest>,
    ) -> Result<Response<pb::ActivateAccountResponse>, Status> {
        self.ctx.limit_attempts(&request)?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let password = if request.password.is_empty() {
            None
        } else {
            Some(Password::parse("password", &request.password)?)
        };
        let user = self
            .ctx
            .app
            .activate(&request.token, password, &client)
            .await?;
        Ok(Response::new(pb::ActivateAccountResponse {
            user: Some(user.into()),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        // Before anything is parsed or hashed.
        self.ctx.limit_attempts(&request)?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let tenant = violations.check(TenantRef::parse("tenant", &request.tenant));
        let login = violations.check(Login::parse("login", &request.login));
        if request.password.is_empty() {
            violations.check::<()>(Err(crate::model::Error::invalid("password", "is required")));
        }
        violations.finish()?;
        let (Some(tenant), Some(login)) = (tenant, login) else {
            return Err(Status::internal("login parse left a field unset"));
        };
        let outcome = self
            .ctx
            .app
            .login(&tenant, &login, &request.password, &client)
            .await?;
        let user = match &outcome {
            LoginOutcome::Session(tokens) => &tokens.user,
            LoginOutcome::SecondFactorRequired(challenge) => &challenge.user,
        };
        tracing::Span::current().record("tenant_id", tracing::field::display(user.tenant_id));
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        Ok(Response::new(outcome.into()))
    }

    async fn complete_login(
        &self,
        request: Request<pb::CompleteLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        self.ctx.limit_attempts(&request)?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        if request.challenge.trim().is_empty() {
            violations.check::<()>(Err(Error::invalid("challenge", "is required")));
        }
        let code = request.code.trim();
        if code.is_empty() {
            violations.check::<()>(Err(Error::invalid("code", "is required")));
        } else if code.len() > 64 {
            violations.check::<()>(Err(Error::invalid("code", "must be at most 64 characters")));
        }
        violations.finish()?;
        let tokens = self
            .ctx
            .app
            .complete_login(&request.challenge, code, &client)
            .await?;
        tracing::Span::current()
            .record("tenant_id", tracing::field::display(tokens.user.tenant_id));
        tracing::Span::current().record("user_id", tracing::field::display(tokens.user.id));
        Ok(Response::new(tokens.into()))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        self.ctx.limit_attempts(&request)?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let tenant = violations.check(TenantRef::parse("tenant", &request.tenant));
        let email = violations.check(Email::parse("email", &request.email));
        violations.finish()?;
        let (Some(tenant), Some(email)) = (tenant, email) else {
            return Err(Status::internal("password reset parse left a field unset"));
        };
        // Answered before anything is looked up: the same answer, in the same time, whether or
        // not the email exists.
        self.ctx.app.request_password_reset(tenant, email, client);
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password_with_token(
        &self,
        request: Request<pb::ResetPasswordWithTokenRequest>,
    ) -> Result<Response<pb::ResetPasswordWithTokenResponse>, Status> {
        self.ctx.limit_attempts(&request)?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        if request.token.trim().is_empty() {
            violations.check::<()>(Err(Error::invalid("token", "is required")));
        }
        let password = violations.check(Password::parse("new_password", &request.new_password));
        violations.finish()?;
        let Some(password) = password else {
            return Err(Status::internal("password parse left a field unset"));
        };
        self.ctx
            .app
            .reset_password_with_token(&request.token, password, &client)
            .await?;
        Ok(Response::new(pb::ResetPasswordWithTokenResponse {}))
    }

    async fn confirm_email(
        &self,
        request: Request<pb::ConfirmEmailRequest>,
    ) -> Result<Response<pb::ConfirmEmailResponse>, Status> {
        self.ctx.limit_attempts(&request)?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let email = self.ctx.app.confirm_email(&request.token, &client).await?;
        Ok(Response::new(pb::ConfirmEmailResponse {
            email: email.as_str().to_owned(),
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        if request.refresh_token.trim().is_empty() {
            return Err(crate::model::Error::invalid("refresh_token", "is required").into());
        }
        let tokens = self
            .ctx
            .app
            .refresh(&request.refresh_token, &client)
            .await?;
        Ok(Response::new(tokens.into()))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        self.ctx.app.logout(&principal, &client).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let request = request.into_inner();
        let token = request.token;
        let address = request.client_address.trim();
        let verified = if address.is_empty() {
            self.ctx.app.authenticate(token.trim()).await
        } else {
            match address.parse::<std::net::IpAddr>() {
                Ok(address) => {
                    self.ctx
                        .app
                        .authenticate_from(token.trim(), Some(address))
                        .await
                }
                Err(_) => {
                    return Err(Error::invalid("client_address", "is not an IP address").into());
                }
            }
        };
        // An invalid token is an answer, not an error.
        let response = match verified {
            Ok(principal) => pb::ValidateTokenResponse {
                valid: true,
                principal: Some(principal.into()),
            },
            Err(_) => pb::ValidateTokenResponse {
                valid: false,
                principal: None,
            },
        };
        Ok(Response::new(response))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let (user, tenant) = self.ctx.app.who_am_i(&principal).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            user: Some(std::sync::Arc::unwrap_or_clone(user).into()),
            tenant: Some(std::sync::Arc::unwrap_or_clone(tenant).into()),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        if request.current_password.is_empty() {
            violations.check::<()>(Err(crate::model::Error::invalid(
                "current_password",
                "is required",
            )));
        }
        let new_password = violations.check(Password::parse("new_password", &request.new_password));
        violations.finish()?;
        let Some(new_password) = new_password else {
            return Err(Status::internal("password parse left a field unset"));
        };
        let (access_token, expires_at) = self
            .ctx
            .app
            .change_password(&principal, &request.current_password, new_password, &client)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            access_token,
            access_token_expires_at: Some(timestamp(expires_at)),
        }))
    }
}
