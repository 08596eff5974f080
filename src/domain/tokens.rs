//! Access tokens (HMAC-signed, verified without a database round trip), the in-memory revocation
//! list that makes a revocation bite on the next call, and random single-use secrets.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::{Error, Principal, Result, SessionId, TenantId, UserId};

const ACCESS_PREFIX: &str = "rat1";
const REFRESH_PREFIX: &str = "rrt1";

/// The claims inside an access token (short names keep the token small).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    t: Uuid,
    u: Uuid,
    s: Uuid,
    r: Vec<String>,
    o: bool,
    /// The user's token generation at issue; bumping it revokes every older token.
    g: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pcr: bool,
    iat: i64,
    exp: i64,
}

/// Sessions and users whose tokens are refused before they expire. Entries live only as long as
/// an access token could, so the list stays small.
#[derive(Debug, Default)]
pub struct Revocations {
    sessions: RwLock<HashMap<SessionId, DateTime<Utc>>>,
    /// Tokens of a user with an older generation are refused; the instant is for pruning.
    users: RwLock<HashMap<UserId, (i64, DateTime<Utc>)>>,
}

impl Revocations {
    /// Refuses every token of a session from now on.
    pub fn revoke_session(&self, session: SessionId, at: DateTime<Utc>) {
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.insert(session, at);
        }
    }

    /// Refuses every token of a user whose generation is below `generation` (revoked at `at`).
    pub fn revoke_user(&self, user: UserId, generation: i64, at: DateTime<Utc>) {
        self.revoke_users([(user, generation)], at);
    }

    /// [`Revocations::revoke_user`] for many users under one lock.
    pub fn revoke_users(
        &self,
        revoked: impl IntoIterator<Item = (UserId, i64)>,
        at: DateTime<Utc>,
    ) {
        if let Ok(mut users) = self.users.write() {
            for (user, generation) in revoked {
                let entry = users.entry(user).or_insert((generation, at));
                *entry = (entry.0.max(generation), entry.1.max(at));
            }
        }
    }

    fn refuses(&self, session: SessionId, user: UserId, generation: i64) -> bool {
        let session_revoked = self
            .sessions
            .read()
            .map(|s| s.contains_key(&session))
            .unwrap_or(true);
        let user_revoked = self
            .users
            .read()
            .map(|users| {
                users
                    .get(&user)
                    .is_some_and(|(minimum, _)| generation < *minimum)
            })
            .unwrap_or(true);
        session_revoked || user_revoked
    }

    /// Forgets entries older than any token still alive.
    pub fn prune(&self, older_than: DateTime<Utc>) {
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.retain(|_, at| *at > older_than);
        }
        if let Ok(mut users) = self.users.write() {
            users.retain(|_, (_, at)| *at > older_than);
        }
    }
}

/// Issues and verifies access tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    key: Arc<Vec<u8>>,
    access_ttl: Duration,
    revocations: Arc<Revocations>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

/// What an access token is issued for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub session_id: SessionId,
    pub roles: Vec<String>,
    pub is_owner: bool,
    pub password_change_required: bool,
    /// The user's current token generation.
    pub token_generation: i64,
}

type HmacSha256 = Hmac<Sha256>;

impl TokenIssuer {
    /// An issuer signing with `key` (at least 32 bytes).
    pub fn new(key: Vec<u8>, access_ttl: Duration, revocations: Arc<Revocations>) -> Result<Self> {
        if key.len() < 32 {
            return Err(Error::internal("token signing key shorter than 32 bytes"));
        }
        Ok(Self {
            key: Arc::new(key),
            access_ttl,
            revocations,
        })
    }

    /// The revocation list this issuer consults.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// How long access tokens live.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("hmac takes any key length"))
    }

    /// Signs an access token for `grant`, valid from `now` for the access TTL.
    pub fn issue(&self, grant: &Grant, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let expires_at = now + self.access_ttl;
        let claims = Claims {
            t: grant.tenant_id.0,
            u: grant.user_id.0,
            s: grant.session_id.0,
            r: grant.roles.clone(),
            o: grant.is_owner,
            g: grant.token_generation,
            pcr: grant.password_change_required,
            iat: now.timestamp_millis(),
            exp: expires_at.timestamp_millis(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signed = format!("{ACCESS_PREFIX}.{payload}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        (format!("{signed}.{signature}"), expires_at)
    }

    /// Verifies signature, expiry and revocation; no database round trip.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal> {
        let invalid = || Error::unauthenticated("INVALID_TOKEN", "the access token is invalid");
        let (signed, signature) = token.rsplit_once('.').ok_or_else(invalid)?;
        let (prefix, payload) = signed.split_once('.').ok_or_else(invalid)?;
        if prefix != ACCESS_PREFIX {
            return Err(invalid());
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature).map_err(|_| invalid())?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(invalid)?;
        let issued_at = DateTime::from_timestamp_millis(claims.iat).ok_or_else(invalid)?;
        let expires_at = DateTime::from_timestamp_millis(claims.exp).ok_or_else(invalid)?;
        if expires_at <= now {
            return Err(Error::unauthenticated(
                "TOKEN_EXPIRED",
                "the access token has expired",
            ));
        }
        let principal = Principal {
            tenant_id: TenantId(claims.t),
            user_id: UserId(claims.u),
            session_id: SessionId(claims.s),
            roles: claims.r,
            is_owner: claims.o,
            password_change_required: claims.pcr,
            issued_at,
            expires_at,
        };
        if self
            .revocations
            .refuses(principal.session_id, principal.user_id, claims.g)
        {
            return Err(Error::unauthenticated(
                "SESSION_REVOKED",
                "the session has ended",
            ));
        }
        Ok(principal)
    }
}

/// A random URL-safe secret of 32 bytes.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a secret token: SHA-256, hex. Tokens are random, so no salt is needed.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TokenIssuer {
    /// A refresh token names its session so that it can be found, carries a random secret, and
    /// is signed, so that a spent token of the session is recognised as reuse however many
    /// rotations ago it was spent (the session keeps only the hash of the current one).
    pub fn refresh_token(&self, session: SessionId) -> String {
        let unsigned = format!(
            "{REFRESH_PREFIX}.{}.{}",
            session.0.simple(),
            random_secret()
        );
        let mut mac = self.mac();
        mac.update(unsigned.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{unsigned}.{signature}")
    }

    /// Whether this issuer made `token` (current or spent); a forged token naming a session is
    /// not, and must not be able to end it.
    pub fn issued_refresh_token(&self, token: &str) -> bool {
        let Some((unsigned, signature)) = token.rsplit_once('.') else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(unsigned.as_bytes());
        refresh_token_session(token).is_some() && mac.verify_slice(&signature).is_ok()
    }
}

/// The session a refresh token names, if it is well-formed.
pub fn refresh_token_session(token: &str) -> Option<SessionId> {
    let mut parts = token.split('.');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(REFRESH_PREFIX), Some(id), Some(secret), Some(signature), None)
            if !secret.is_empty() && !signature.is_empty() =>
        {
            Uuid::parse_str(id).ok().map(SessionId)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(vec![7; 32], Duration::minutes(15), Arc::default()).unwrap()
    }

    fn grant() -> Grant {
        Grant {
            tenant_id: TenantId::new(),
            user_id: UserId::new(),
            session_id: SessionId::new(),
            roles: vec!["ADMIN".into()],
            is_owner: false,
            password_change_required: false,
            token_generation: 3,
        }
    }

    #[test]
    fn a_token_verifies_until_it_expires_or_is_revoked() {
        let issuer = issuer();
        let now = Utc::now();
        let grant = grant();
        let (token, expires_at) = issuer.issue(&grant, now);
        let principal = issuer.verify(&token, now).unwrap();
        assert_eq!(principal.user_id, grant.user_id);
        assert_eq!(principal.roles, vec!["ADMIN".to_string()]);
        assert!(issuer.verify(&token, expires_at).is_err());
        issuer.revocations().revoke_session(grant.session_id, now);
        assert!(issuer.verify(&token, now).is_err());
    }

    #[test]
    fn a_tampered_or_foreign_token_is_refused() {
        let issuer = issuer();
        let now = Utc::now();
        let (token, _) = issuer.issue(&grant(), now);
        let mut tampered = token.clone().into_bytes();
        let middle = tampered.len() / 2;
        tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
        assert!(
            issuer
                .verify(&String::from_utf8(tampered).unwrap(), now)
                .is_err()
        );
        let other = TokenIssuer::new(vec![8; 32], Duration::minutes(15), Arc::default()).unwrap();
        assert!(other.verify(&token, now).is_err());
    }

    #[test]
    fn user_revocation_spares_tokens_of_the_next_generation() {
        let issuer = issuer();
        let now = Utc::now();
        let grant = grant();
        let (old, _) = issuer.issue(&grant, now);
        issuer.revocations().revoke_user(grant.user_id, 4, now);
        let (new, _) = issuer.issue(
            &Grant {
                token_generation: 4,
                ..grant
            },
            now,
        );
        assert!(issuer.verify(&old, now).is_err());
        assert!(issuer.verify(&new, now).is_ok());
    }

    #[test]
    fn refresh_tokens_name_their_session() {
        let session = SessionId::new();
        assert_eq!(
            refresh_token_session(&issuer().refresh_token(session)),
            Some(session)
        );
        assert_eq!(refresh_token_session("rrt1.nope.x.y"), None);
    }

    #[test]
    fn only_refresh_tokens_of_this_issuer_count_as_issued() {
        let session = SessionId::new();
        let token = issuer().refresh_token(session);
        assert!(issuer().issued_refresh_token(&token));
        let other = TokenIssuer::new(vec![8; 32], Duration::minutes(15), Arc::default()).unwrap();
        assert!(!other.issued_refresh_token(&token));
        let (unsigned, _) = token.rsplit_once('.').unwrap();
        assert!(!issuer().issued_refresh_token(&format!("{unsigned}.AAAA")));
        assert!(!issuer().issued_refresh_token(unsigned));
    }
}
