//! SecurityService: the account's security settings (the two-factor requirement) and lifting
//! a user's lockout. The lockout itself (counting failures) lives in [`super::lockout`], the
//! second factor in [`super::two_factor`].

use serde_json::json;

use super::{
    App,
    policy::{self, Action, UserAction, authorize},
};
use crate::{
    model::{ClientInfo, Error, NewActivity, Principal, Result, User, UserId, UserStatus},
    store,
};

impl App {
    /// Whether the account requires two-factor authentication (users.read).
    pub async fn security_settings(&self, principal: &Principal) -> Result<bool> {
        authorize(principal, Action::ReadSecuritySettings)?;
        store::tenants::requires_two_factor(self.store.db(), principal.tenant_id).await
    }

    /// Changes the account's two-factor requirement (the owner). Users without an enrolment are
    /// held to it from their next login or refresh.
    pub async fn set_two_factor_requirement(
        &self,
        principal: &Principal,
        required: bool,
        client: &ClientInfo,
    ) -> Result<bool> {
        authorize(principal, Action::ChangeSecuritySettings)?;
        let tx = self.change().await?;
        store::tenants::set_requires_two_factor(&tx, principal.tenant_id, required).await?;
        self.record(
            &tx,
            NewActivity {
                tenant_id: principal.tenant_id,
                actor: Some(principal.user_id),
                action: "account.security_settings_changed",
                target_type: Some("account"),
                target_id: Some(principal.tenant_id.0),
                client: client.clone(),
                details: json!({ "require_two_factor": required }),
            },
        )
        .await?;
        self.commit(tx).await?;
        Ok(required)
    }

    /// Lifts the lockout of a LOCKED user (admins and the owner).
    pub async fn unlock_user(
        &self,
        principal: &Principal,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<User> {
        let tx = self.change().await?;
        let target = self
            .locked_target(&tx, principal.tenant_id, user_id)
            .await?;
        policy::authorize_on_user(principal, UserAction::Unlock, &target, None)?;
        if target.status != UserStatus::Locked {
            return Err(Error::precondition(
                "USER_NOT_LOCKED",
                "the user is not locked",
            ));
        }
        let now = self.clock.now();
        store::users::set_status(
            &tx,
            principal.tenant_id,
            &[user_id],
            UserStatus::Active,
            now,
        )
        .await?;
        store::lockouts::clear(&tx, principal.tenant_id, user_id).await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "user.unlocked",
                user_id,
                client,
            ),
        )
        .await?;
        self.commit(tx).await?;
        self.target(principal.tenant_id, user_id).await
    }
}
