use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Error, Result, TenantId, UserId};

/// Identifies a team (or department, desk, skill group, space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TeamId(pub Uuid);

impl TeamId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the id sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        Uuid::parse_str(text.trim())
            .map(Self)
            .map_err(|_| Error::invalid(field, "must be a team id (UUID)"))
    }
}

impl Default for TeamId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What kind of group: one model serves them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TeamKind {
    Team,
    Department,
    Desk,
    SkillGroup,
    Space,
}

impl TeamKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Team => "TEAM",
            Self::Department => "DEPARTMENT",
            Self::Desk => "DESK",
            Self::SkillGroup => "SKILL_GROUP",
            Self::Space => "SPACE",
        }
    }

    /// Reads a stored name.
    pub fn from_stored(text: &str) -> Result<Self> {
        match text {
            "TEAM" => Ok(Self::Team),
            "DEPARTMENT" => Ok(Self::Department),
            "DESK" => Ok(Self::Desk),
            "SKILL_GROUP" => Ok(Self::SkillGroup),
            "SPACE" => Ok(Self::Space),
            other => Err(Error::internal(format!(
                "unknown stored team kind {other:?}"
            ))),
        }
    }
}

/// A member's role in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TeamRole {
    #[default]
    Member,
    Supervisor,
    Manager,
}

impl TeamRole {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "MEMBER",
            Self::Supervisor => "SUPERVISOR",
            Self::Manager => "MANAGER",
        }
    }

    /// Reads a stored name.
    pub fn from_stored(text: &str) -> Result<Self> {
        match text {
            "MEMBER" => Ok(Self::Member),
            "SUPERVISOR" => Ok(Self::Supervisor),
            "MANAGER" => Ok(Self::Manager),
            other => Err(Error::internal(format!(
                "unknown stored team role {other:?}"
            ))),
        }
    }
}

/// A group of users of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: TeamId,
    pub tenant_id: TenantId,
    pub kind: TeamKind,
    pub name: String,
    pub description: String,
    /// The space the team belongs to.
    pub space_id: Option<TeamId>,
    pub member_count: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user's place in a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub team_id: TeamId,
    pub team_name: String,
    pub team_kind: TeamKind,
    pub user_id: UserId,
    pub role: TeamRole,
    pub added_at: DateTime<Utc>,
}

/// A filter over teams.
#[derive(Debug, Clone, Default, Hash)]
pub struct TeamFilter {
    pub kinds: Vec<TeamKind>,
    /// Lower-cased text contained in the name.
    pub query: Option<String>,
    pub space_id: Option<TeamId>,
}
