//! Login sessions as the rest of the system sees them: only hashes of refresh tokens.

use chrono::{DateTime, Utc};

use super::{ClientInfo, SessionId, TenantId, UserId};

/// A login session (a refresh token's), as stored.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub refresh_token_hash: String,
    pub previous_refresh_token_hash: Option<String>,
    pub client: ClientInfo,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}
