//! Model -> proto conversions (request parsing lives next to each service).

use chrono::{DateTime, Utc};

use super::pb;
use crate::model::{
    AutoDial, DialerProfile, Membership, PbxExtension, Principal, SipSettings, TeamKind, TeamRole,
    Tenant, User, UserStatus,
};

/// A team kind as its enum.
pub fn team_kind(kind: TeamKind) -> pb::TeamKind {
    match kind {
        TeamKind::Team => pb::TeamKind::Team,
        TeamKind::Department => pb::TeamKind::Department,
        TeamKind::Desk => pb::TeamKind::Desk,
        TeamKind::SkillGroup => pb::TeamKind::SkillGroup,
        TeamKind::Space => pb::TeamKind::Space,
    }
}

/// A team role as its enum.
pub fn team_role(role: TeamRole) -> pb::TeamRole {
    match role {
        TeamRole::Member => pb::TeamRole::Member,
        TeamRole::Supervisor => pb::TeamRole::Supervisor,
        TeamRole::Manager => pb::TeamRole::Manager,
    }
}

/// A membership as its message.
pub fn membership(membership: Membership) -> pb::TeamMembership {
    pb::TeamMembership {
        team_id: membership.team_id.to_string(),
        team_name: membership.team_name,
        team_kind: team_kind(membership.team_kind) as i32,
        user_id: membership.user_id.to_string(),
        role: team_role(membership.role) as i32,
        added_at: Some(timestamp(membership.added_at)),
    }
}

/// A protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

impl From<UserStatus> for pb::UserStatus {
    fn from(status: UserStatus) -> Self {
        match status {
            UserStatus::PendingConfirmation => Self::PendingConfirmation,
            UserStatus::Active => Self::Active,
            UserStatus::Inactive => Self::Inactive,
            UserStatus::Locked => Self::Locked,
        }
    }
}

impl From<User> for pb::User {
    fn from(user: User) -> Self {
        Self {
            id: user.id.to_string(),
            tenant_id: user.tenant_id.to_string(),
            email: user.email.as_str().to_owned(),
            email_verified: user.email_verified,
            pending_email: user
                .pending_email
                .map(|email| email.as_str().to_owned())
                .unwrap_or_default(),
            username: user.username.as_str().to_owned(),
            first_name: user.first_name.as_str().to_owned(),
            last_name: user.last_name.as_str().to_owned(),
            status: pb::UserStatus::from(user.status) as i32,
            roles: user.roles,
            is_owner: user.is_owner,
            created_at: Some(timestamp(user.created_at)),
            last_login_at: user.last_login_at.map(timestamp),
            password_change_required: user.password_change_required,
            dialer_profile: user.dialer_profile.map(|profile| {
                dialer_profile(profile, user.caldav_token_set, user.pbx_password_set)
            }),
            updated_at: Some(timestamp(user.updated_at)),
            tags: user.tags,
            memberships: user.memberships.into_iter().map(membership).collect(),
        }
    }
}

impl From<AutoDial> for pb::AutoDialMode {
    fn from(mode: AutoDial) -> Self {
        match mode {
            AutoDial::Off => Self::Off,
            AutoDial::Optional => Self::Optional,
            AutoDial::Always => Self::Always,
        }
    }
}

/// The profile as returned: secrets are reported only as "set".
fn dialer_profile(
    profile: DialerProfile,
    caldav_token_set: bool,
    pbx_password_set: bool,
) -> pb::DialerProfile {
    use pb::{pbx::Extension, sip_settings::Option as Sip};
    let sip = match profile.sip {
        SipSettings::None => None,
        SipSettings::CustomUri(uri) => Some(Sip::CustomUri(pb::CustomSipUri {
            uri: uri.as_str().to_owned(),
        })),
        SipSettings::WebRtc => Some(Sip::Webrtc(pb::WebRtc {})),
        SipSettings::Pbx {
            username,
            extension,
        } => Some(Sip::Pbx(pb::Pbx {
            username: username.unwrap_or_default(),
            password: String::new(),
            password_set: pbx_password_set,
            extension: extension.map(|extension| match extension {
                PbxExtension::Number(number) => Extension::Number(number.as_str().to_owned()),
                PbxExtension::Dynamic => Extension::Dynamic(true),
            }),
        })),
    };
    pb::DialerProfile {
        oauth_email: profile
            .oauth_email
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        caldav_token: String::new(),
        caldav_token_set,
        active: profile.active,
        assign_leads: profile.assign_leads,
        extended_ip_acl: profile.extended_ip_acl,
        allowed_networks: profile
            .allowed_networks
            .iter()
            .map(ToString::to_string)
            .collect(),
        auto_dial: pb::AutoDialMode::from(profile.auto_dial) as i32,
        caller_id_name: profile.caller_id_name.unwrap_or_default(),
        caller_id_number: profile
            .caller_id_number
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        virtual_extension: profile
            .virtual_extension
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        timezone: profile
            .timezone
            .map(|tz| tz.as_str().to_owned())
            .unwrap_or_default(),
        language: profile
            .language
            .map(|l| l.as_str().to_owned())
            .unwrap_or_default(),
        tenant_superuser: profile.tenant_superuser,
        sip: sip.map(|option| pb::SipSettings {
            option: Some(option),
        }),
    }
}

impl From<Tenant> for pb::Tenant {
    fn from(tenant: Tenant) -> Self {
        Self {
            id: tenant.id.to_string(),
            slug: tenant.slug,
            name: tenant.name.as_str().to_owned(),
            owner_user_id: tenant
                .owner_user_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            created_at: Some(timestamp(tenant.created_at)),
        }
    }
}

impl From<Principal> for pb::Principal {
    fn from(principal: Principal) -> Self {
        let (user_id, session_id, service_account_id, api_key_id) = if principal.service_account {
            (
                String::new(),
                String::new(),
                principal.user_id.to_string(),
                principal.session_id.to_string(),
            )
        } else {
            (
                principal.user_id.to_string(),
                principal.session_id.to_string(),
                String::new(),
                String::new(),
            )
        };
        Self {
            tenant_id: principal.tenant_id.to_string(),
            user_id,
            session_id,
            roles: principal.roles,
            permissions: principal.permissions,
            is_owner: principal.is_owner,
            expires_at: Some(timestamp(principal.expires_at)),
            service_account_id,
            api_key_id,
        }
    }
}

/// A JSON value as a protobuf value.
pub fn value(json: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(object(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf struct (`None` for anything but an object).
pub fn structure(json: serde_json::Value) -> Option<prost_types::Struct> {
    match json {
        serde_json::Value::Object(map) => Some(object(map)),
        _ => None,
    }
}

fn object(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, value(v))).collect(),
    }
}
