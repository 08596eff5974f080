//! Access tokens (HMAC-signed, verified without a database round trip), the in-memory revocation
//! list that makes a revocation bite on the next call, and random single-use secrets.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, OnceLock, RwLock},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedSender;
use uuid::Uuid;

use crate::model::{ALL_PERMISSIONS, Error, Principal, Result, SessionId, TenantId, UserId};

/// Access tokens: claims in postcard's binary form. A `rat2` token is about 160 characters where
/// a `rat1` token (JSON claims) was about 320: every call that carries one pays for its size, and
/// HTTP/2 stacks copy a frame under 256 bytes into their write buffer but send a larger one by
/// itself, one write per call.
const ACCESS_PREFIX: &str = "rat2";
/// Access tokens with JSON claims, issued before `rat2`: still read until they expire.
const JSON_ACCESS_PREFIX: &str = "rat1";
const REFRESH_PREFIX: &str = "rrt1";

/// The claims inside an access token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    t: Uuid,
    u: Uuid,
    s: Uuid,
    r: Vec<String>,
    /// Effective permissions at issue.
    p: PermissionClaim,
    o: bool,
    /// The user's token generation at issue; bumping it revokes every older token.
    g: i64,
    /// A new password must be chosen before anything else.
    pcr: bool,
    /// Two-factor enrolment required before anything else.
    tfr: bool,
    /// The networks the user may call from (the Dialer's extended IP ACL), when restricted.
    n: Option<Vec<IpNet>>,
    iat: i64,
    exp: i64,
}

/// The claims of a `rat1` token (JSON: short names, absent flags are false).
#[derive(Debug, Deserialize)]
struct JsonClaims {
    t: Uuid,
    u: Uuid,
    s: Uuid,
    r: Vec<String>,
    p: JsonPermissionClaim,
    o: bool,
    g: i64,
    #[serde(default)]
    pcr: bool,
    #[serde(default)]
    tfr: bool,
    #[serde(default)]
    n: Option<Vec<IpNet>>,
    iat: i64,
    exp: i64,
}

/// Permissions inside a token: bit `i` stands for `ALL_PERMISSIONS[i]`, about 20 times smaller
/// than the names. A permission this server does not know travels by name.
#[derive(Debug, Serialize, Deserialize)]
enum PermissionClaim {
    Bits(u64),
    Names(Vec<String>),
}

/// [`PermissionClaim`] as JSON writes it: a number or a list of names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonPermissionClaim {
    Bits(u64),
    Names(Vec<String>),
}

impl From<JsonClaims> for Claims {
    fn from(json: JsonClaims) -> Self {
        Self {
            t: json.t,
            u: json.u,
            s: json.s,
            r: json.r,
            p: match json.p {
                JsonPermissionClaim::Bits(bits) => PermissionClaim::Bits(bits),
                JsonPermissionClaim::Names(names) => PermissionClaim::Names(names),
            },
            o: json.o,
            g: json.g,
            pcr: json.pcr,
            tfr: json.tfr,
            n: json.n,
            iat: json.iat,
            exp: json.exp,
        }
    }
}

const _: () = assert!(
    ALL_PERMISSIONS.len() <= 64,
    "permission bits must fit a u64"
);

impl PermissionClaim {
    fn new(permissions: &[String]) -> Self {
        let mut bits = 0u64;
        for permission in permissions {
            match ALL_PERMISSIONS
                .iter()
                .position(|(key, _)| key == permission)
            {
                Some(index) => bits |= 1 << index,
                None => return Self::Names(permissions.to_vec()),
            }
        }
        Self::Bits(bits)
    }

    /// The names, or `None` for a bit no permission stands for.
    fn names(self) -> Option<Vec<String>> {
        match self {
            Self::Names(names) => Some(names),
            Self::Bits(bits) => {
                if bits >> ALL_PERMISSIONS.len() != 0 {
                    return None;
                }
                let mut names: Vec<String> = ALL_PERMISSIONS
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| bits & (1 << index) != 0)
                    .map(|(_, (key, _))| (*key).to_owned())
                    .collect();
                // In the order grants list them.
                names.sort_unstable();
                Some(names)
            }
        }
    }
}

/// Sessions and users whose tokens are refused before they expire. Entries live only as long as
/// an access token could, so the list stays small.
#[derive(Debug, Default)]
pub struct Revocations {
    sessions: RwLock<HashMap<SessionId, DateTime<Utc>>>,
    /// Tokens of a user with an older generation are refused; the instant is for pruning.
    users: RwLock<HashMap<UserId, (i64, DateTime<Utc>)>>,
    /// Users whose roles changed since their tokens were issued: their current roles and
    /// permissions replace the ones inside the token, so a change bites on the next call.
    /// Users given one grant share it.
    grants: RwLock<HashMap<UserId, Arc<CurrentGrant>>>,
    /// Where revocations made here go to reach the other replicas (PostgreSQL NOTIFY).
    publisher: OnceLock<UnboundedSender<RevocationEvent>>,
    /// This replica's name in its notifications, once it announces to others (PostgreSQL).
    origin: OnceLock<uuid::Uuid>,
}

/// A revocation as it travels between replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    /// Sessions ended.
    Sessions(Vec<SessionId>, DateTime<Utc>),
    /// Users' token generations raised.
    Users(Vec<(UserId, i64)>, DateTime<Utc>),
    /// These users' roles and permissions changed, to the same grant (a mass change is a few
    /// of these, one per distinct outcome).
    Grants(Vec<UserId>, CurrentGrant),
}

/// A user's roles and permissions as they are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentGrant {
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub is_owner: bool,
    /// When the change happened, for pruning.
    pub at: DateTime<Utc>,
}

impl Revocations {
    /// Entries held: ended sessions, users whose older tokens are refused, users with changed
    /// grants.
    pub fn sizes(&self) -> [(&'static str, usize); 3] {
        [
            ("sessions", self.sessions.read().map_or(0, |map| map.len())),
            ("users", self.users.read().map_or(0, |map| map.len())),
            ("grants", self.grants.read().map_or(0, |map| map.len())),
        ]
    }

    /// Sends every later revocation made on this replica to `publisher` as well.
    pub fn set_publisher(&self, publisher: UnboundedSender<RevocationEvent>) {
        let _ = self.publisher.set(publisher);
    }

    /// Names this replica in the notifications it sends inside its transactions.
    pub fn set_origin(&self, origin: uuid::Uuid) {
        let _ = self.origin.set(origin);
    }

    /// This replica's name, when other replicas are to hear of its revocations.
    pub fn origin(&self) -> Option<uuid::Uuid> {
        self.origin.get().copied()
    }

    fn publish(&self, event: RevocationEvent) {
        if let Some(publisher) = self.publisher.get() {
            let _ = publisher.send(event);
        }
    }

    /// Applies a revocation made on another replica (without sending it on again).
    pub fn apply(&self, event: RevocationEvent) {
        match event {
            RevocationEvent::Sessions(sessions, at) => self.apply_sessions(sessions, at),
            RevocationEvent::Users(users, at) => self.apply_users(users, at),
            RevocationEvent::Grants(users, grant) => self.apply_grants(&users, grant),
        }
    }

    fn apply_sessions(&self, sessions: impl IntoIterator<Item = SessionId>, at: DateTime<Utc>) {
        if let Ok(mut revoked) = self.sessions.write() {
            for session in sessions {
                revoked.insert(session, at);
            }
        }
    }

    fn apply_users(&self, revoked: impl IntoIterator<Item = (UserId, i64)>, at: DateTime<Utc>) {
        if let Ok(mut users) = self.users.write() {
            for (user, generation) in revoked {
                let entry = users.entry(user).or_insert((generation, at));
                *entry = (entry.0.max(generation), entry.1.max(at));
            }
        }
    }

    fn apply_grants(&self, users: &[UserId], grant: CurrentGrant) {
        let grant = Arc::new(grant);
        if let Ok(mut grants) = self.grants.write() {
            for user in users {
                grants.insert(*user, grant.clone());
            }
        }
    }

    /// Refuses every token of a session from now on.
    pub fn revoke_session(&self, session: SessionId, at: DateTime<Utc>) {
        self.revoke_sessions([session], at);
    }

    /// [`Revocations::revoke_session`] for many sessions under one lock.
    pub fn revoke_sessions(
        &self,
        sessions: impl IntoIterator<Item = SessionId>,
        at: DateTime<Utc>,
    ) {
        let sessions: Vec<SessionId> = sessions.into_iter().collect();
        if sessions.is_empty() {
            return;
        }
        self.apply_sessions(sessions.iter().copied(), at);
        self.publish(RevocationEvent::Sessions(sessions, at));
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
        let revoked: Vec<(UserId, i64)> = revoked.into_iter().collect();
        if revoked.is_empty() {
            return;
        }
        self.apply_users(revoked.iter().copied(), at);
        self.publish(RevocationEvent::Users(revoked, at));
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

    /// Records users' new roles and permissions; tokens issued earlier carry them from now on.
    pub fn regrant(&self, users: Vec<UserId>, grant: CurrentGrant) {
        if users.is_empty() {
            return;
        }
        self.apply_grants(&users, grant.clone());
        self.publish(RevocationEvent::Grants(users, grant));
    }

    /// The instant of the grant recorded for `user`, if any.
    pub fn granted_at(&self, user: UserId) -> Option<DateTime<Utc>> {
        self.current_grant(user).map(|grant| grant.at)
    }

    fn current_grant(&self, user: UserId) -> Option<Arc<CurrentGrant>> {
        self.grants
            .read()
            .ok()
            .and_then(|grants| grants.get(&user).cloned())
    }

    /// Forgets entries older than any token still alive.
    pub fn prune(&self, older_than: DateTime<Utc>) {
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.retain(|_, at| *at > older_than);
        }
        if let Ok(mut users) = self.users.write() {
            users.retain(|_, (_, at)| *at > older_than);
        }
        if let Ok(mut grants) = self.grants.write() {
            grants.retain(|_, grant| grant.at > older_than);
        }
    }
}

/// Issues and verifies access tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    /// HMAC state keyed once: keying hashes the key's two pads, on every call otherwise.
    keyed: HmacSha256,
    access_ttl: Duration,
    revocations: Arc<Revocations>,
    /// What verifying a token's signature and reading its claims gave, by the token's exact
    /// text: services validate the same token many times during its short life. Only what
    /// verified is kept, and expiry and revocation are still checked on every call.
    verified: Arc<quick_cache::sync::Cache<String, Arc<Verified>>>,
}

/// A token whose signature checked out, as read.
struct Verified {
    principal: Principal,
    generation: i64,
    networks: Option<Vec<IpNet>>,
}

/// Tokens remembered as verified, per replica.
const VERIFIED_TOKENS: usize = 4_096;

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
    pub permissions: Vec<String>,
    pub is_owner: bool,
    pub password_change_required: bool,
    /// The user's current token generation.
    pub token_generation: i64,
    /// The networks the user may call from, when the Dialer's extended IP ACL restricts them.
    pub allowed_networks: Option<Vec<IpNet>>,
    /// The account requires two-factor authentication and the user has not enrolled yet.
    pub two_factor_enrollment_required: bool,
}

type HmacSha256 = Hmac<Sha256>;

impl TokenIssuer {
    /// An issuer signing with `key` (at least 32 bytes).
    pub fn new(key: Vec<u8>, access_ttl: Duration, revocations: Arc<Revocations>) -> Result<Self> {
        if key.len() < 32 {
            return Err(Error::internal("token signing key shorter than 32 bytes"));
        }
        Ok(Self {
            keyed: HmacSha256::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("hmac takes any key length")),
            access_ttl,
            revocations,
            verified: Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS)),
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

    /// A 32-byte key for `purpose`, derived from the signing key (HMAC-SHA256 of the purpose), so
    /// that one configured secret keys every use without any two sharing a key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(b"roster derived key: ");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// Signs an access token for `grant`, valid from `now` for the access TTL.
    pub fn issue(&self, grant: &Grant, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let expires_at = now + self.access_ttl;
        let claims = Claims {
            t: grant.tenant_id.0,
            u: grant.user_id.0,
            s: grant.session_id.0,
            r: grant.roles.clone(),
            p: PermissionClaim::new(&grant.permissions),
            o: grant.is_owner,
            g: grant.token_generation,
            pcr: grant.password_change_required,
            tfr: grant.two_factor_enrollment_required,
            n: grant.allowed_networks.clone(),
            iat: now.timestamp_millis(),
            exp: expires_at.timestamp_millis(),
        };
        let payload = URL_SAFE_NO_PAD.encode(postcard::to_allocvec(&claims).unwrap_or_default());
        let signed = format!("{ACCESS_PREFIX}.{payload}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        (format!("{signed}.{signature}"), expires_at)
    }

    /// Verifies signature, expiry and revocation; no database round trip. The IP allow-list
    /// inside the token is not checked (see [`TokenIssuer::verify_from`]).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal> {
        self.decode(token, now).map(|(principal, _)| principal)
    }

    /// [`TokenIssuer::verify`] for a call from `address`: a token restricted to some networks
    /// (the Dialer's extended IP ACL) is refused from anywhere else, or from an unknown address.
    pub fn verify_from(
        &self,
        token: &str,
        now: DateTime<Utc>,
        address: Option<IpAddr>,
    ) -> Result<Principal> {
        let (principal, networks) = self.decode(token, now)?;
        if let Some(networks) = networks {
            let allowed =
                address.is_some_and(|address| networks.iter().any(|net| net.contains(&address)));
            if !allowed {
                return Err(ip_not_allowed());
            }
        }
        Ok(principal)
    }

    fn decode(&self, token: &str, now: DateTime<Utc>) -> Result<(Principal, Option<Vec<IpNet>>)> {
        let verified = match self.verified.get(token) {
            Some(verified) => verified,
            None => {
                let verified = Arc::new(self.verify_signature(token)?);
                self.verified.insert(token.to_owned(), verified.clone());
                verified
            }
        };
        if verified.principal.expires_at <= now {
            return Err(Error::unauthenticated(
                "TOKEN_EXPIRED",
                "the access token has expired",
            ));
        }
        let mut principal = verified.principal.clone();
        if self
            .revocations
            .refuses(principal.session_id, principal.user_id, verified.generation)
        {
            return Err(Error::unauthenticated(
                "SESSION_REVOKED",
                "the session has ended",
            ));
        }
        // Only tokens issued before the change carry stale roles; later ones were issued from the
        // database and are at least as new as the recorded change.
        if let Some(current) = self
            .revocations
            .current_grant(principal.user_id)
            .filter(|current| principal.issued_at <= current.at)
        {
            principal.roles = current.roles.clone();
            principal.permissions = current.permissions.clone();
            principal.is_owner = current.is_owner;
        }
        Ok((principal, verified.networks.clone()))
    }

    /// Checks a token's signature (in constant time) and reads its claims.
    fn verify_signature(&self, token: &str) -> Result<Verified> {
        let invalid = || Error::unauthenticated("INVALID_TOKEN", "the access token is invalid");
        let (signed, signature) = token.rsplit_once('.').ok_or_else(invalid)?;
        let (prefix, payload) = signed.split_once('.').ok_or_else(invalid)?;
        if prefix != ACCESS_PREFIX && prefix != JSON_ACCESS_PREFIX {
            return Err(invalid());
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature).map_err(|_| invalid())?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let claims: Claims = if prefix == ACCESS_PREFIX {
            postcard::from_bytes(&payload).map_err(|_| invalid())?
        } else {
            serde_json::from_slice::<JsonClaims>(&payload)
                .map_err(|_| invalid())?
                .into()
        };
        let issued_at = DateTime::from_timestamp_millis(claims.iat).ok_or_else(invalid)?;
        let expires_at = DateTime::from_timestamp_millis(claims.exp).ok_or_else(invalid)?;
        Ok(Verified {
            principal: Principal {
                tenant_id: TenantId(claims.t),
                user_id: UserId(claims.u),
                session_id: SessionId(claims.s),
                roles: claims.r,
                permissions: claims.p.names().ok_or_else(invalid)?,
                is_owner: claims.o,
                password_change_required: claims.pcr,
                two_factor_enrollment_required: claims.tfr,
                issued_at,
                expires_at,
                service_account: false,
            },
            generation: claims.g,
            networks: claims.n,
        })
    }
}

/// The refusal of a call or a login from outside the user's allowed networks.
pub fn ip_not_allowed() -> Error {
    Error::denied(
        "IP_NOT_ALLOWED",
        "this user may not sign in or call from this network address",
    )
}

/// A random URL-safe secret of 32 bytes.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a secret token: SHA-256, hex. Tokens are random, so no salt is needed.
pub fn token_hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
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

    #[test]
    fn a_token_hash_is_the_lower_case_hex_sha256_that_stored_hashes_use() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn grant() -> Grant {
        Grant {
            tenant_id: TenantId::new(),
            user_id: UserId::new(),
            session_id: SessionId::new(),
            roles: vec!["ADMIN".into()],
            permissions: vec!["users.read".into()],
            is_owner: false,
            password_change_required: false,
            token_generation: 3,
            allowed_networks: None,
            two_factor_enrollment_required: false,
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
    fn permissions_travel_as_bits_and_come_back_as_names() {
        let issuer = issuer();
        let now = Utc::now();
        let every: Vec<String> = ALL_PERMISSIONS
            .iter()
            .map(|(key, _)| (*key).to_owned())
            .collect();
        let mut every_sorted = every.clone();
        every_sorted.sort();
        for permissions in [vec![], vec!["users.read".to_owned()], every_sorted] {
            let grant = Grant {
                permissions: permissions.clone(),
                ..grant()
            };
            let (token, _) = issuer.issue(&grant, now);
            assert_eq!(issuer.verify(&token, now).unwrap().permissions, permissions);
        }
        let (small, _) = issuer.issue(&grant(), now);
        let (large, _) = issuer.issue(
            &Grant {
                permissions: every,
                ..grant()
            },
            now,
        );
        // Every permission costs a few digits more than one.
        assert!(
            large.len() <= small.len() + 12,
            "{} bytes for one permission, {} for all",
            small.len(),
            large.len()
        );
        // A permission this server does not know travels by name.
        let unknown = Grant {
            permissions: vec!["users.read".into(), "future.thing".into()],
            ..grant()
        };
        let (token, _) = issuer.issue(&unknown, now);
        assert_eq!(
            issuer.verify(&token, now).unwrap().permissions,
            unknown.permissions
        );
    }

    /// A token of `prefix` with `payload` as its claims, signed by `issuer`.
    fn signed_token(issuer: &TokenIssuer, prefix: &str, payload: &[u8]) -> String {
        let signed = format!("{prefix}.{}", URL_SAFE_NO_PAD.encode(payload));
        let mut mac = issuer.mac();
        mac.update(signed.as_bytes());
        format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn claims(now: DateTime<Utc>, p: PermissionClaim) -> Claims {
        Claims {
            t: Uuid::new_v4(),
            u: Uuid::new_v4(),
            s: Uuid::new_v4(),
            r: vec![],
            p,
            o: false,
            g: 0,
            pcr: false,
            tfr: false,
            n: None,
            iat: now.timestamp_millis(),
            exp: (now + Duration::minutes(1)).timestamp_millis(),
        }
    }

    #[test]
    fn a_bit_that_names_no_permission_invalidates_the_token() {
        let issuer = issuer();
        let now = Utc::now();
        let binary = postcard::to_allocvec(&claims(now, PermissionClaim::Bits(1 << 63))).unwrap();
        let good = postcard::to_allocvec(&claims(now, PermissionClaim::Bits(1))).unwrap();
        assert!(
            issuer
                .verify(&signed_token(&issuer, ACCESS_PREFIX, &good), now)
                .is_ok()
        );
        assert!(
            issuer
                .verify(&signed_token(&issuer, ACCESS_PREFIX, &binary), now)
                .is_err()
        );
        let json = serde_json::json!({
            "t": Uuid::new_v4(), "u": Uuid::new_v4(), "s": Uuid::new_v4(), "r": [],
            "p": 1u64 << 63, "o": false, "g": 0,
            "iat": now.timestamp_millis(), "exp": (now + Duration::minutes(1)).timestamp_millis(),
        });
        let json = serde_json::to_vec(&json).unwrap();
        assert!(
            issuer
                .verify(&signed_token(&issuer, JSON_ACCESS_PREFIX, &json), now)
                .is_err()
        );
    }

    #[test]
    fn tokens_with_json_claims_issued_before_the_binary_form_still_verify() {
        let issuer = issuer();
        let now = Utc::now();
        let (tenant, user, session) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for (p, permissions) in [
            (serde_json::json!(1), vec![ALL_PERMISSIONS[0].0.to_owned()]),
            (
                serde_json::json!(["future.thing"]),
                vec!["future.thing".to_owned()],
            ),
        ] {
            let json = serde_json::json!({
                "t": tenant, "u": user, "s": session, "r": ["ADMIN"], "p": p, "o": true,
                "g": 4, "pcr": true, "n": ["203.0.113.0/24"],
                "iat": now.timestamp_millis(),
                "exp": (now + Duration::minutes(1)).timestamp_millis(),
            });
            let token = signed_token(
                &issuer,
                JSON_ACCESS_PREFIX,
                &serde_json::to_vec(&json).unwrap(),
            );
            let inside = Some("203.0.113.9".parse().unwrap());
            let principal = issuer.verify_from(&token, now, inside).unwrap();
            assert_eq!(principal.tenant_id, TenantId(tenant));
            assert_eq!(principal.user_id, UserId(user));
            assert_eq!(principal.session_id, SessionId(session));
            assert_eq!(principal.roles, vec!["ADMIN".to_owned()]);
            assert_eq!(principal.permissions, permissions);
            assert!(principal.is_owner && principal.password_change_required);
            assert!(!principal.two_factor_enrollment_required);
            let outside = Some("198.51.100.1".parse().unwrap());
            assert!(issuer.verify_from(&token, now, outside).is_err());
        }
    }

    #[test]
    fn an_owners_token_with_every_permission_stays_under_the_size_http2_sends_by_itself() {
        let issuer = issuer();
        let grant = Grant {
            is_owner: true,
            permissions: ALL_PERMISSIONS
                .iter()
                .map(|(key, _)| (*key).to_owned())
                .collect(),
            ..grant()
        };
        let (token, _) = issuer.issue(&grant, Utc::now());
        assert!(token.starts_with("rat2."));
        // A ValidateToken request is the token plus 7 bytes of framing: under 256 bytes, h2
        // copies it into its write buffer beside other calls' frames.
        assert!(token.len() <= 200, "{} bytes: {token}", token.len());
    }

    #[test]
    fn a_token_restricted_to_networks_is_refused_from_elsewhere() {
        let issuer = issuer();
        let now = Utc::now();
        let (token, _) = issuer.issue(
            &Grant {
                allowed_networks: Some(vec!["203.0.113.0/24".parse().unwrap()]),
                ..grant()
            },
            now,
        );
        let inside: IpAddr = "203.0.113.7".parse().unwrap();
        let outside: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(issuer.verify_from(&token, now, Some(inside)).is_ok());
        for address in [Some(outside), None] {
            let err = issuer.verify_from(&token, now, address).unwrap_err();
            assert!(matches!(
                err,
                Error::PermissionDenied {
                    reason: "IP_NOT_ALLOWED",
                    ..
                }
            ));
        }
        let (open, _) = issuer.issue(&grant(), now);
        assert!(issuer.verify_from(&open, now, Some(outside)).is_ok());
    }

    #[test]
    fn revocations_made_here_are_published_and_remote_ones_are_not() {
        let revocations = Revocations::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        revocations.set_publisher(tx);
        let now = Utc::now();
        let session = SessionId::new();
        revocations.revoke_session(session, now);
        assert_eq!(
            rx.try_recv().unwrap(),
            RevocationEvent::Sessions(vec![session], now)
        );
        let user = UserId::new();
        revocations.apply(RevocationEvent::Users(vec![(user, 5)], now));
        assert!(rx.try_recv().is_err());
        assert!(revocations.refuses(SessionId::new(), user, 4));
        assert!(!revocations.refuses(SessionId::new(), user, 5));
        assert!(revocations.refuses(session, UserId::new(), 0));
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
    fn a_regrant_replaces_the_roles_inside_older_tokens() {
        let issuer = issuer();
        let now = Utc::now();
        let grant = grant();
        let (token, _) = issuer.issue(&grant, now);
        issuer.revocations().regrant(
            vec![grant.user_id],
            CurrentGrant {
                roles: vec![],
                permissions: vec!["support.contact".into()],
                is_owner: false,
                at: now,
            },
        );
        let principal = issuer.verify(&token, now).unwrap();
        assert!(principal.roles.is_empty());
        assert!(!principal.can(crate::model::Permission::UsersRead));
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
