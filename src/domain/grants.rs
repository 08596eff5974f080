//! What an access token carries for a user: roles, permissions, ownership, the IP allow-list
//! and whether the account still waits for their two-factor enrolment; and a fresh token for a
//! session whose user changed.

use chrono::{DateTime, Utc};

use super::{App, tokens::Grant};
use crate::{
    model::{Error, Principal, Result, SessionId, User},
    store,
};

impl App {
    /// What an access token for `user` in `session_id` carries.
    pub(crate) async fn grant(
        &self,
        user: &User,
        session_id: SessionId,
        token_generation: i64,
    ) -> Result<Grant> {
        let enrollment_required = self.two_factor_enrollment_required(user).await?;
        self.grant_with(user, session_id, token_generation, enrollment_required)
            .await
    }

    /// [`App::grant`] when the caller knows already whether two-factor enrolment is required.
    pub(crate) async fn grant_with(
        &self,
        user: &User,
        session_id: SessionId,
        token_generation: i64,
        two_factor_enrollment_required: bool,
    ) -> Result<Grant> {
        Ok(Grant {
            tenant_id: user.tenant_id,
            user_id: user.id,
            session_id,
            roles: user.roles.clone(),
            permissions: self
                .permissions_for(user.tenant_id, &user.roles, user.is_owner)
                .await?,
            is_owner: user.is_owner,
            password_change_required: user.password_change_required,
            token_generation,
            allowed_networks: user
                .dialer_profile
                .as_ref()
                .filter(|profile| profile.extended_ip_acl)
                .map(|profile| profile.allowed_networks.clone()),
            two_factor_enrollment_required,
        })
    }

    /// A fresh access token for the principal's session, with what is true of the user now.
    pub(crate) async fn reissue(&self, principal: &Principal) -> Result<(String, DateTime<Utc>)> {
        let credentials =
            store::users::get_credentials(self.store.db(), principal.tenant_id, principal.user_id)
                .await?
                .ok_or_else(Error::caller_gone)?;
        let grant = self
            .grant(
                &credentials.user,
                principal.session_id,
                credentials.token_generation,
            )
            .await?;
        Ok(self.tokens.issue(&grant, self.clock.now()))
    }

    /// Whether `user` has confirmed two-factor authentication.
    pub(crate) async fn has_two_factor(&self, user: &User) -> Result<bool> {
        Ok(
            store::two_factor::get(self.store.db(), user.tenant_id, user.id)
                .await?
                .is_some_and(|enrolment| enrolment.confirmed_at.is_some()),
        )
    }

    /// Whether `user`'s account requires two-factor authentication they have not set up yet.
    pub(crate) async fn two_factor_enrollment_required(&self, user: &User) -> Result<bool> {
        if !store::tenants::requires_two_factor(self.store.db(), user.tenant_id).await? {
            return Ok(false);
        }
        Ok(!self.has_two_factor(user).await?)
    }
}
