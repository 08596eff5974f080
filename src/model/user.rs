use chrono::{DateTime, Utc};

use super::{Email, Error, PersonName, Result, TenantId, UserId, Username};

/// Lifecycle state of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserStatus {
    /// Created; waits for the activation link to be followed.
    PendingConfirmation,
    /// May log in.
    Active,
    /// Deactivated by an administrator.
    Inactive,
    /// Locked after failed authentication attempts.
    Locked,
}

impl UserStatus {
    /// The stored name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingConfirmation => "PENDING_CONFIRMATION",
            Self::Active => "ACTIVE",
            Self::Inactive => "INACTIVE",
            Self::Locked => "LOCKED",
        }
    }

    /// Reads a stored status name.
    pub fn from_stored(text: &str) -> Result<Self> {
        match text {
            "PENDING_CONFIRMATION" => Ok(Self::PendingConfirmation),
            "ACTIVE" => Ok(Self::Active),
            "INACTIVE" => Ok(Self::Inactive),
            "LOCKED" => Ok(Self::Locked),
            other => Err(Error::internal(format!(
                "unknown stored user status {other:?}"
            ))),
        }
    }
}

/// A user of one account, as the rest of the system sees it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub username: Username,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub status: UserStatus,
    /// Role keys, sorted.
    pub roles: Vec<String>,
    pub is_owner: bool,
    pub password_change_required: bool,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}
