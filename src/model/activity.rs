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
