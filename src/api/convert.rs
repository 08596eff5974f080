//! Model -> proto conversions (request parsing lives next to each service).

use chrono::{DateTime, Utc};

use super::pb;
use crate::model::{Principal, Tenant, User, UserStatus};

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
            username: user.username.as_str().to_owned(),
            first_name: user.first_name.as_str().to_owned(),
            last_name: user.last_name.as_str().to_owned(),
            status: pb::UserStatus::from(user.status) as i32,
            roles: user.roles,
            is_owner: user.is_owner,
            created_at: Some(timestamp(user.created_at)),
            last_login_at: user.last_login_at.map(timestamp),
            password_change_required: user.password_change_required,
        }
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

impl From<&Principal> for pb::Principal {
    fn from(principal: &Principal) -> Self {
        Self {
            tenant_id: principal.tenant_id.to_string(),
            user_id: principal.user_id.to_string(),
            session_id: principal.session_id.to_string(),
            roles: principal.roles.clone(),
            permissions: principal
                .permissions()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            is_owner: principal.is_owner,
            expires_at: Some(timestamp(principal.expires_at)),
        }
    }
}
