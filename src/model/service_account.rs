//! Service accounts: machine callers of an account, with roles like users and API keys instead
//! of passwords.

use chrono::{DateTime, Utc};

use super::{ApiKeyId, ServiceAccountId, TenantId};

/// A service account of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub id: ServiceAccountId,
    pub tenant_id: TenantId,
    pub name: String,
    pub description: String,
    /// Account role keys, as a user holds them.
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Changes to a service account; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccountPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub roles: Option<Vec<String>>,
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub service_account_id: ServiceAccountId,
    /// The visible start of the key (`rsk_<prefix>_...`), to find a leaked key in other logs.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}
