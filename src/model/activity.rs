use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{TenantId, UserId};

/// Where a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection's peer, or the entry a trusted proxy added to `x-forwarded-for`.
    pub address: Option<String>,
    pub user_agent: Option<String>,
}

/// An activity record to write, in the same transaction as the change it describes.
#[derive(Debug, Clone)]
pub struct NewActivity {
    pub tenant_id: TenantId,
    pub actor: Option<UserId>,
    /// Dotted action name, e.g. `auth.login` or `user.deleted`.
    pub action: &'static str,
    pub target_type: Option<&'static str>,
    pub target_id: Option<Uuid>,
    pub client: ClientInfo,
    /// Extra facts as a JSON object; never a secret.
    pub details: serde_json::Value,
}

impl NewActivity {
    /// A record of `action` by `actor` on a user.
    pub fn on_user(
        tenant_id: TenantId,
        actor: Option<UserId>,
        action: &'static str,
        target: UserId,
        client: &ClientInfo,
    ) -> Self {
        Self {
            tenant_id,
            actor,
            action,
            target_type: Some("user"),
            target_id: Some(target.0),
            client: client.clone(),
            details: serde_json::Value::Object(Default::default()),
        }
    }

    /// Adds facts to the record.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored activity record.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub actor: Option<UserId>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub client: ClientInfo,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Which activity records a listing or a live watch shows; empty parts do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// Records by this user.
    pub actor: Option<UserId>,
    /// Records about this target (a user id, usually).
    pub target: Option<Uuid>,
    /// Records by or about this user (what a user without `activity.read` may see of their own).
    pub involving: Option<UserId>,
    /// Action names (`auth.login`), or prefixes ending in `*` (`auth.*`); any of them matches.
    pub actions: Vec<String>,
    /// Written at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Written before this instant.
    pub until: Option<DateTime<Utc>>,
}

impl ActivityFilter {
    /// Whether `record` passes the filter (the live feed filters in memory, lists in SQL).
    pub fn matches(&self, record: &ActivityRecord) -> bool {
        let action_ok = self.actions.is_empty()
            || self
                .actions
                .iter()
                .any(|action| match action.strip_suffix('*') {
                    Some(prefix) => record.action.starts_with(prefix),
                    None => record.action == *action,
                });
        action_ok
            && self.actor.is_none_or(|actor| record.actor == Some(actor))
            && self
                .target
                .is_none_or(|target| record.target_id == Some(target))
            && self
                .involving
                .is_none_or(|user| record.actor == Some(user) || record.target_id == Some(user.0))
            && self.since.is_none_or(|since| record.created_at >= since)
            && self.until.is_none_or(|until| record.created_at < until)
    }
}
