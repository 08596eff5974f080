//! Self-service "forgot password": a mailed single-use, expiring token lets a user choose a new
//! password. The request answers the same whether or not the email exists, and takes the same
//! time: the lookup and the mail happen after the answer, in the background.

use std::time::Duration;

use serde_json::json;

use super::{App, mail};
use crate::{
    model::{ClientInfo, Email, Login, NewActivity, Password, Result, TenantRef, UserStatus},
    store,
};

/// Purpose of the mailed-token table rows that reset passwords.
pub const PURPOSE_PASSWORD_RESET: &str = "password_reset";

impl App {
    /// Mails a password-reset link to the user with `email` in the account, if there is one and
    /// they may log in. Returns at once, before looking anything up.
    pub fn request_password_reset(&self, tenant: TenantRef, email: Email, client: ClientInfo) {
        let app = self.clone();
        // After a random pause, so that the work for an existing user (a token, a message) does
        // not fall on this answer or on the caller's next call more than on anyone else's.
        let pause = Duration::from_millis(rand::Rng::random_range(&mut rand::rng(), 5..=50));
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            if let Err(err) = app.send_password_reset(&tenant, &email, &client).await {
                tracing::warn!(error = %err, "password reset request failed");
            }
        });
    }

    async fn send_password_reset(
        &self,
        tenant: &TenantRef,
        email: &Email,
        client: &ClientInfo,
    ) -> Result<()> {
        let db = self.store.db();
        let Some(tenant) = store::tenants::find(db, tenant).await? else {
            return Ok(());
        };
        let login = Login::parse("email", email.as_str())?;
        let Some(credentials) = store::users::find_by_login(db, &tenant, &login).await? else {
            return Ok(());
        };
        let user = credentials.user;
        // Only the email counts (not a username that happens to look like it), and only users
        // who may log in: pending users activate, deactivated ones ask an admin.
        // And only to a confirmed address: an address an admin set (or mistyped) is not proof.
        if user.email != *email
            || !user.email_verified
            || !matches!(user.status, UserStatus::Active | UserStatus::Locked)
        {
            return Ok(());
        }
        let ttl = self.policies.password_reset_ttl;
        let tx = self.change().await?;
        let purpose = PURPOSE_PASSWORD_RESET;
        let token = self
            .issue_mailed_token(&tx, tenant.id, user.id, purpose, &[purpose], ttl)
            .await?;
        let message = mail::password_reset(
            user.email.as_str(),
            user.first_name.as_str(),
            tenant.name.as_str(),
            &self.link("reset-password", &token),
            ttl.num_minutes().max(1),
        );
        self.queue_mail(&tx, Some(tenant.id), &message).await?;
        self.record(
            &tx,
            NewActivity::on_user(
                tenant.id,
                None,
                "auth.password_reset_requested",
                user.id,
                client,
            ),
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Sets a new password with a password-reset token. The user's sessions end, and a lockout
    /// is lifted (the mailbox proved who they are).
    pub async fn reset_password_with_token(
        &self,
        token: &str,
        new_password: Password,
        client: &ClientInfo,
    ) -> Result<()> {
        let invalid = super::invalid_token;
        let now = self.clock.now();
        let found = self
            .mailed_token(
                token,
                &[PURPOSE_PASSWORD_RESET],
                "the password-reset link has expired; ask for a new one",
            )
            .await?;
        let user = self
            .target(found.tenant_id, found.user_id)
            .await
            .map_err(|_| invalid())?;
        if !matches!(user.status, UserStatus::Active | UserStatus::Locked) {
            return Err(invalid());
        }
        let hash = self.passwords.hash(new_password.expose()).await?;
        let tx = self.change().await?;
        if !store::tokens::mark_used(&tx, found.id, now).await? {
            return Err(invalid());
        }
        store::users::set_password_hash(&tx, user.tenant_id, user.id, &hash, false, now).await?;
        if user.status == UserStatus::Locked {
            store::users::set_status(&tx, user.tenant_id, &[user.id], UserStatus::Active, now)
                .await?;
        }
        store::lockouts::clear(&tx, user.tenant_id, user.id).await?;
        let revoked = self
            .end_all_sessions(&tx, user.tenant_id, &[user.id], "password_reset")
            .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                user.tenant_id,
                Some(user.id),
                "user.password_reset_by_token",
                user.id,
                client,
            )
            .with_details(json!({ "unlocked": user.status == UserStatus::Locked })),
        )
        .await?;
        tx.revoke_users(revoked, self.clock.now());
        self.commit(tx).await?;
        Ok(())
    }
}
