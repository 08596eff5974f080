use chrono::{DateTime, Utc};

use super::{Permission, SessionId, TenantId, UserId, permissions_of};

/// The verified identity behind a request. The tenant comes only from here, never from a
/// request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub session_id: SessionId,
    /// Role keys.
    pub roles: Vec<String>,
    pub is_owner: bool,
    /// The user must change their password before anything else works.
    pub password_change_required: bool,
    /// When the access token was issued.
    pub issued_at: DateTime<Utc>,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
}

impl Principal {
    /// The effective permissions.
    pub fn permissions(&self) -> Vec<Permission> {
        permissions_of(&self.roles, self.is_owner)
    }

    /// Whether the principal holds `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.is_owner || self.permissions().contains(&permission)
    }
}
