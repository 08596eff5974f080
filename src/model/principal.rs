use chrono::{DateTime, Utc};

use super::{SessionId, TenantId, UserId};

/// The verified identity behind a request. The tenant comes only from here, never from a
/// request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub session_id: SessionId,
    /// Role keys of every scope.
    pub roles: Vec<String>,
    /// Effective permission keys (all of them for the owner).
    pub permissions: Vec<String>,
    pub is_owner: bool,
    /// The user must change their password before anything else works.
    pub password_change_required: bool,
    /// The account requires two-factor authentication and the user has not enrolled yet: only
    /// enrolment (and reading oneself, logging out) works until they do.
    pub two_factor_enrollment_required: bool,
    /// When the access token was issued.
    pub issued_at: DateTime<Utc>,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// A service account calling with an API key: `user_id` is the service account's id and
    /// `session_id` the key's; it has no profile, password, second factor or sessions.
    pub service_account: bool,
}

impl Principal {
    /// Whether the principal holds `permission`.
    pub fn can(&self, permission: super::Permission) -> bool {
        self.is_owner || self.permissions.iter().any(|p| p == permission.key())
    }
}
