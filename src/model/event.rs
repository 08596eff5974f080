//! The durable event feed's vocabulary: what other services are told of, in commit order.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Error, Result, TenantId, UserId};

/// The kinds of change other services act on. The names are a contract with consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    UserCreated,
    UserUpdated,
    UserActivated,
    UserDeactivated,
    UserReactivated,
    UserDeleted,
    UserRolesChanged,
    TeamMemberAdded,
    TeamMemberRemoved,
    TeamMemberRoleChanged,
    OwnershipTransferred,
    SessionRevoked,
}

impl EventType {
    pub const ALL: [EventType; 12] = [
        Self::UserCreated,
        Self::UserUpdated,
        Self::UserActivated,
        Self::UserDeactivated,
        Self::UserReactivated,
        Self::UserDeleted,
        Self::UserRolesChanged,
        Self::TeamMemberAdded,
        Self::TeamMemberRemoved,
        Self::TeamMemberRoleChanged,
        Self::OwnershipTransferred,
        Self::SessionRevoked,
    ];

    /// The dotted name consumers filter on.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserActivated => "user.activated",
            Self::UserDeactivated => "user.deactivated",
            Self::UserReactivated => "user.reactivated",
            Self::UserDeleted => "user.deleted",
            Self::UserRolesChanged => "user.roles_changed",
            Self::TeamMemberAdded => "team.member_added",
            Self::TeamMemberRemoved => "team.member_removed",
            Self::TeamMemberRoleChanged => "team.member_role_changed",
            Self::OwnershipTransferred => "account.ownership_transferred",
            Self::SessionRevoked => "session.revoked",
        }
    }

    /// The event an activity record of `action` also is, if any: every single change writes its
    /// activity record, so the feed follows from it and no RPC can forget its event. (Team
    /// records name the team; their events, one per member, are emitted where they are made.)
    pub fn for_action(action: &str) -> Option<Self> {
        if action.starts_with("team.") {
            return None;
        }
        let renamed = match action {
            "user.permissions_removed" => "user.roles_changed",
            // Signing up creates the account's first user, its owner.
            "account.signed_up" => "user.created",
            "user.email_confirmed" => "user.updated",
            other => other,
        };
        Self::ALL.into_iter().find(|kind| kind.as_str() == renamed)
    }
}

/// An event to write with the change it describes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub tenant_id: TenantId,
    pub event_type: EventType,
    pub target_type: &'static str,
    pub target_id: Uuid,
    /// The user (or service account) that made the change; `None` for roster itself.
    pub actor: Option<UserId>,
    /// The actor is a service account (set as the change commits).
    pub actor_service_account: bool,
    /// What changed, as a JSON object; never a secret.
    pub fields: serde_json::Value,
}

impl NewEvent {
    /// An event about a user.
    pub fn on_user(
        tenant_id: TenantId,
        actor: Option<UserId>,
        event_type: EventType,
        user: UserId,
        fields: serde_json::Value,
    ) -> Self {
        Self {
            tenant_id,
            event_type,
            target_type: "user",
            target_id: user.0,
            actor,
            actor_service_account: false,
            fields,
        }
    }
}

/// A committed event. `cursor` numbers the account's events in commit order, without gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub cursor: i64,
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub event_type: String,
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub actor: Option<UserId>,
    pub actor_service_account: bool,
    pub fields: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Which events a listing or a watch shows; empty parts do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Event types, any of them.
    pub types: Vec<EventType>,
    /// Events about this target (a user id, usually).
    pub target: Option<Uuid>,
}

impl EventFilter {
    /// Parses type names: a whole name (`user.deleted`) or a prefix ending in `*` (`user.*`).
    pub fn parse_types(field: &str, names: &[String]) -> Result<Vec<EventType>> {
        super::bounded(field, names, super::limits::EVENT_TYPES)?;
        let mut types = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let name = name.trim();
            let matching: Vec<EventType> = match name.strip_suffix('*') {
                Some(prefix) => EventType::ALL
                    .into_iter()
                    .filter(|kind| kind.as_str().starts_with(prefix))
                    .collect(),
                None => EventType::ALL
                    .into_iter()
                    .filter(|kind| kind.as_str() == name)
                    .collect(),
            };
            if matching.is_empty() {
                return Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("no event type is {name:?}"),
                ));
            }
            for kind in matching {
                if !types.contains(&kind) {
                    types.push(kind);
                }
            }
        }
        Ok(types)
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty()
            || self
                .types
                .iter()
                .any(|kind| kind.as_str() == event.event_type))
            && self
                .target
                .is_none_or(|target| event.target_id == Some(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_prefixes_select_their_family() {
        for kind in EventType::ALL {
            let expected = (!kind.as_str().starts_with("team.")).then_some(kind);
            assert_eq!(EventType::for_action(kind.as_str()), expected);
        }
        assert_eq!(EventType::for_action("auth.login"), None);
        let users = EventFilter::parse_types("types", &["user.*".into()]).unwrap();
        assert_eq!(users.len(), 7);
        assert!(users.iter().all(|kind| kind.as_str().starts_with("user.")));
        let err = EventFilter::parse_types("types", &["user.exploded".into()]).unwrap_err();
        assert!(err.to_string().contains("types[0]"), "{err}");
    }
}
