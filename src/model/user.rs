use chrono::{DateTime, Utc};

use super::{
    DialerProfile, Email, Error, Membership, PersonName, Result, TeamId, TenantId, UserId, Username,
};

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
    /// Every status.
    pub const ALL: [UserStatus; 4] = [
        UserStatus::PendingConfirmation,
        UserStatus::Active,
        UserStatus::Inactive,
        UserStatus::Locked,
    ];

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
    /// Whether the user confirmed `email` through a mailed link (no reset link goes elsewhere).
    pub email_verified: bool,
    /// A self-service change of address waiting for the new address to confirm it.
    pub pending_email: Option<Email>,
    pub username: Username,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub status: UserStatus,
    /// Role keys of every scope, sorted.
    pub roles: Vec<String>,
    /// Whether a role of the user is admin-grade (Admin, or a custom role with admin permissions).
    pub is_admin: bool,
    /// Free labels.
    pub tags: Vec<String>,
    /// Teams, departments, desks, skill groups and spaces the user belongs to.
    pub memberships: Vec<Membership>,
    pub is_owner: bool,
    pub password_change_required: bool,
    /// Dialer settings, for Dialer users.
    pub dialer_profile: Option<DialerProfile>,
    /// Whether a CalDAV token is stored (the token itself is never read back).
    pub caldav_token_set: bool,
    /// Whether a PBX password is stored.
    pub pbx_password_set: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

impl User {
    /// Whether the user holds the Admin role or an admin-grade custom role.
    pub fn is_admin(&self) -> bool {
        self.is_admin
    }

    /// Whether the user is a Dialer tenant superuser.
    pub fn is_tenant_superuser(&self) -> bool {
        self.dialer_profile
            .as_ref()
            .is_some_and(|profile| profile.tenant_superuser)
    }
}

/// The text a user's names, email and username are searched in: each part lower-cased (full
/// Unicode rules, as the query is) between two unit separators (U+001F), which no query holds, so
/// that a match never spans two parts (migration 000023 fills it for users made before it).
pub fn search_text(first_name: &str, last_name: &str, email: &str, username: &str) -> String {
    let mut text = String::with_capacity(
        first_name.len() + last_name.len() + email.len() + username.len() + 5,
    );
    for part in [first_name, last_name, email, username] {
        text.push(SEARCH_SEPARATOR);
        text.extend(
            part.chars()
                .filter(|c| *c != SEARCH_SEPARATOR)
                .flat_map(char::to_lowercase),
        );
    }
    text.push(SEARCH_SEPARATOR);
    text
}

/// Separates the parts of [`search_text`].
pub const SEARCH_SEPARATOR: char = '\u{1f}';

impl User {
    /// This user's [`search_text`].
    pub fn search_text(&self) -> String {
        search_text(
            self.first_name.as_str(),
            self.last_name.as_str(),
            self.email.as_str(),
            self.username.as_str(),
        )
    }
}

/// How a text query matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum MatchMode {
    #[default]
    Contains,
    Prefix,
    Exact,
}

/// Which users a list or a mass action applies to; empty parts do not filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct UserFilter {
    /// Lower-cased text matched against names, email and username.
    pub query: Option<String>,
    pub match_mode: MatchMode,
    pub statuses: Vec<UserStatus>,
    /// Users holding any of these roles.
    pub roles: Vec<String>,
    /// Users in any of these teams (departments, desks, skill groups, spaces).
    pub team_ids: Vec<TeamId>,
    /// Users with any of these tags.
    pub tags: Vec<String>,
    /// Only these users (a list restricted to the caller, or an explicit selection).
    pub ids: Option<Vec<UserId>>,
}

/// Sort orders of user lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum UserOrder {
    #[default]
    Created,
    Email,
    Username,
    LastName,
}

impl UserOrder {
    /// A user's value under this order, for cursors.
    pub fn sort_value(self, user: &User) -> String {
        match self {
            Self::Created => String::new(),
            Self::Email => user.email.as_str().to_owned(),
            Self::Username => user.username.as_str().to_owned(),
            Self::LastName => user.last_name.as_str().to_owned(),
        }
    }
}

/// Where a keyset page starts: after the row with this sort value and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCursor {
    pub value: String,
    pub id: UserId,
}

/// A page request over users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPageRequest {
    pub filter: UserFilter,
    pub order: UserOrder,
    pub descending: bool,
    pub page_size: u64,
    pub after: Option<UserCursor>,
}
