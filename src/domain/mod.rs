//! Rules and use cases. Each use case takes the caller's identity first, checks authorization
//! ([`policy`]), then runs its change as one unit of work ([`change::Change`]): one transaction
//! with its activity record, whose commit runs every after-commit step.

pub mod activity;
pub mod auth;
pub mod bulk;
pub mod cache;
pub mod change;
pub mod email;
pub mod events;
pub mod grants;
pub mod import;
pub mod lockout;
pub mod mail;
pub mod passwords;
pub mod policy;
pub mod recovery;
pub mod replication;
pub mod roles;
pub mod sealing;
pub mod security;
pub mod service_accounts;
pub mod sessions;
pub mod sign_in;
pub mod teams;
pub mod tokens;
pub mod two_factor;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use chrono::Duration;
use tokio::sync::Notify;

use crate::{
    model::{Clock, Error, NewActivity, Result},
    store::{self, Store},
};
use mail::Mail;
use passwords::PasswordHasher;
use tokens::TokenIssuer;

/// The answer to a mailed token that is unknown, of another purpose, or used already.
fn invalid_token() -> Error {
    Error::invalid("token", "is invalid or has already been used")
}

/// Lifetimes and links that use cases need.
#[derive(Debug, Clone)]
pub struct Policies {
    pub refresh_ttl: Duration,
    pub activation_ttl: Duration,
    /// Base of the links in emails, without a trailing slash.
    pub public_url: String,
    /// Failed passwords or second-factor codes in a row that lock a user.
    pub lockout_threshold: u32,
    /// How long a lockout lasts unless an admin lifts it sooner.
    pub lockout_cooldown: Duration,
    /// Lifetime of "forgot password" links.
    pub password_reset_ttl: Duration,
    /// How long the challenge of a two-factor login waits for its code.
    pub challenge_ttl: Duration,
    /// How long events stay in the feed.
    pub event_retention: Duration,
    /// How webhooks are delivered.
    pub webhooks: webhooks::WebhookRules,
}

/// Everything the use cases share; cheap to clone.
#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub passwords: PasswordHasher,
    pub tokens: TokenIssuer,
    pub policies: Arc<Policies>,
    /// Wakes the outbox sender after a commit that queued mail.
    pub mail_wake: Arc<Notify>,
    /// Wakes the maker of invitation batches after an import queued one.
    pub invitation_wake: Arc<Notify>,
    /// The live activity feed of this replica.
    pub feed: Arc<activity::ActivityFeed>,
    /// Failed logins of unknown users, counted so that they lock like known ones.
    pub guard: Arc<lockout::LoginGuard>,
    /// Users and accounts as last read, for the hot reads.
    pub cache: Arc<cache::ReadCache>,
    /// Rings when events were committed here or on another replica.
    pub events: Arc<events::EventBell>,
    /// The API keys this replica has checked.
    pub api_keys: Arc<service_accounts::KeyCache>,
}

impl App {
    /// Queues `mail` in `change`, whose commit wakes the sender.
    async fn queue_mail(
        &self,
        change: &change::Change,
        tenant: Option<crate::model::TenantId>,
        mail: &Mail,
    ) -> Result<()> {
        store::outbox::enqueue(
            change,
            tenant,
            &mail.to,
            &mail.subject,
            &mail.body,
            self.clock.now(),
        )
        .await?;
        change.mailed();
        Ok(())
    }

    /// Makes a mailed single-use token of `purpose` for `user`, valid for `ttl`, inside `change`;
    /// the user's unused tokens of the `replaces` purposes stop working. Returns the token (only
    /// its hash is stored).
    async fn issue_mailed_token(
        &self,
        change: &change::Change,
        tenant_id: crate::model::TenantId,
        user_id: crate::model::UserId,
        purpose: &str,
        replaces: &[&str],
        ttl: Duration,
    ) -> Result<String> {
        let now = self.clock.now();
        let token = tokens::random_secret();
        store::tokens::retire(change, tenant_id, user_id, replaces, now).await?;
        store::tokens::insert(
            change,
            tenant_id,
            user_id,
            purpose,
            &tokens::token_hash(&token),
            now,
            now + ttl,
        )
        .await?;
        Ok(token)
    }

    /// The unused, unexpired mailed token of one of `purposes` that `token` is: INVALID_ARGUMENT
    /// for a token that is empty, unknown, of another purpose or used, FAILED_PRECONDITION
    /// `TOKEN_EXPIRED` (with `expired`, the advice) for an old one.
    async fn mailed_token(
        &self,
        token: &str,
        purposes: &[&str],
        expired: &'static str,
    ) -> Result<store::tokens::ActionToken> {
        if token.trim().is_empty() {
            return Err(Error::invalid("token", "is required"));
        }
        let found = store::tokens::find_by_hash(self.store.db(), &tokens::token_hash(token.trim()))
            .await?
            .filter(|found| purposes.contains(&found.purpose.as_str()) && found.used_at.is_none())
            .ok_or_else(invalid_token)?;
        if found.expires_at <= self.clock.now() {
            return Err(Error::precondition("TOKEN_EXPIRED", expired));
        }
        Ok(found)
    }

    /// Writes an activity record inside `db`'s transaction, and the feed's event of it when it
    /// describes a change other services act on.
    async fn record(&self, db: &impl change::Journal, mut activity: NewActivity) -> Result<()> {
        if activity
            .actor
            .is_some_and(|actor| self.api_keys.is_service_account(actor))
            && let Some(details) = activity.details.as_object_mut()
        {
            details.insert("actor_type".into(), "service_account".into());
        }
        if let (Some(event_type), Some(target)) = (
            crate::model::EventType::for_action(activity.action),
            activity.target_id,
        ) {
            let event = crate::model::NewEvent {
                tenant_id: activity.tenant_id,
                event_type,
                target_type: activity.target_type.unwrap_or("user"),
                target_id: target,
                actor: activity.actor,
                actor_service_account: false,
                fields: activity.details.clone(),
            };
            if !db.emit_event(event) {
                return Err(Error::internal(format!(
                    "{} recorded outside a change: its event would be lost",
                    activity.action
                )));
            }
        }
        store::activity::insert(db, &activity, self.clock.now()).await?;
        // The in-process feed (SQLite) reads the record once the transaction has committed.
        self.feed.wake();
        Ok(())
    }

    /// A link into the product for a mailed token.
    fn link(&self, path: &str, token: &str) -> String {
        format!("{}/{path}?token={token}", self.policies.public_url)
    }
}
