//! Confirming email addresses: a change of address waits for the new address to confirm it, so
//! that a stolen session (or a typo) cannot redirect the account's mail, and password-reset
//! links go only to a confirmed address.

use serde_json::json;

use super::{App, mail};
use crate::{
    model::{ClientInfo, Email, NewActivity, Result, Tenant, User},
    store::{self, Touched},
};

/// Purpose of the tokens that confirm an address.
pub const PURPOSE_EMAIL_CHANGE: &str = "email_change";

impl App {
    /// Mails a confirmation link to `user.email` (the address to confirm) inside `tx`; older
    /// confirmation links of the user stop working.
    pub(crate) async fn issue_email_confirmation(
        &self,
        tx: &super::change::Change,
        tenant: &Tenant,
        user: &User,
    ) -> Result<()> {
        let ttl = self.policies.activation_ttl;
        let purpose = PURPOSE_EMAIL_CHANGE;
        let token = self
            .issue_mailed_token(tx, tenant.id, user.id, purpose, &[purpose], ttl)
            .await?;
        let message = mail::email_confirmation(
            user.email.as_str(),
            user.first_name.as_str(),
            tenant.name.as_str(),
            &self.link("confirm-email", &token),
            ttl.num_hours().max(1),
        );
        self.queue_mail(tx, Some(tenant.id), &message).await
    }

    /// Consumes a confirmation token: the pending address becomes the user's, or the address an
    /// admin set becomes confirmed. Returns the confirmed address.
    pub async fn confirm_email(&self, token: &str, client: &ClientInfo) -> Result<Email> {
        let invalid = super::invalid_token;
        let now = self.clock.now();
        let found = self
            .mailed_token(
                token,
                &[PURPOSE_EMAIL_CHANGE],
                "the confirmation link has expired; change the address again",
            )
            .await?;
        let tx = self.change().await?;
        let user = store::users::get_for_update(&tx, found.tenant_id, found.user_id)
            .await?
            .ok_or_else(invalid)?
            .user;
        if !store::tokens::mark_used(&tx, found.id, now).await? {
            return Err(invalid());
        }
        let confirmed = user.pending_email.clone().unwrap_or(user.email.clone());
        store::users::confirm_email(&tx, user.tenant_id, user.id, now).await?;
        self.record(
            &tx,
            NewActivity::on_user(
                user.tenant_id,
                Some(user.id),
                "user.email_confirmed",
                user.id,
                client,
            )
            .with_details(json!({
                "email": confirmed.as_str(),
                "changed": user.pending_email.is_some(),
            })),
        )
        .await?;
        tx.touching(Touched::Users(user.tenant_id, vec![user.id]));
        self.commit(tx).await?;
        Ok(confirmed)
    }
}
