//! Two-factor authentication with time-based one-time passwords (RFC 6238: HMAC-SHA-1, 6 digits,
//! 30-second steps, one step of skew either way), as Google Authenticator and compatible apps
//! compute them; single-use backup codes; the second step of a two-factor login; the account
//! setting that requires two-factor authentication of every user.
//!
//! Storage: the TOTP secret must be readable to check codes, so it is stored sealed with
//! AES-256-GCM under a key derived from the server's token-signing key (HMAC-SHA256 with a
//! purpose label), bound to its tenant and user as associated data. A copy of the database alone
//! does not reveal the secrets; the price is that changing the signing key makes the stored
//! secrets unreadable, so users must enrol again (admins: ResetTwoFactor). Backup codes are
//! random (50 bits each) and stored as HMAC-SHA256 under another derived key. A code is accepted
//! for a time step only if no code of that step or a later one was accepted before (one
//! conditional UPDATE, so replicas cannot both accept it).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use super::{
    App,
    policy::{self, Action, UserAction, authorize},
    sealing::{SecretBox, row_binding},
};
use crate::{
    model::{ClientInfo, Error, NewActivity, Principal, Result, TenantId, User, UserId},
    store,
};

/// Digits of a code.
pub const DIGITS: usize = 6;
/// Seconds of a time step.
pub const STEP_SECONDS: u64 = 30;
/// Steps accepted before and after the current one (clock drift, typing time).
const SKEW: i64 = 1;
/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
const SECRET_BYTES: usize = 20;
/// Backup codes handed out at once.
pub const BACKUP_CODE_COUNT: usize = 10;
/// Characters of a backup code (without the dash): 10 of 32 symbols, 50 bits.
const BACKUP_CODE_LEN: usize = 10;
/// No 0/o, no 1/l: codes are read off paper.
const BACKUP_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Label of the key that seals TOTP secrets.
const SECRET_KEY_PURPOSE: &str = "two-factor secrets v1";
/// Label of the key that hashes backup codes.
const BACKUP_KEY_PURPOSE: &str = "two-factor backup codes v1";

pub(crate) fn invalid_code() -> Error {
    Error::unauthenticated(
        "INVALID_CODE",
        "the code is wrong, has expired or was already used",
    )
}

fn totp(algorithm: Algorithm, digits: usize, secret: &[u8]) -> TOTP {
    TOTP::new_unchecked(
        algorithm,
        digits,
        1,
        STEP_SECONDS,
        secret.to_vec(),
        None,
        String::new(),
    )
}

/// The code of `secret` at Unix time `unix_seconds`.
pub fn code_at(secret: &[u8], unix_seconds: u64) -> String {
    totp(Algorithm::SHA1, DIGITS, secret).generate(unix_seconds)
}

/// The time step (current, previous or next) whose code is `code`, compared in constant time.
pub fn matching_step(secret: &[u8], code: &str, now: DateTime<Utc>) -> Option<i64> {
    let step_seconds = i64::try_from(STEP_SECONDS).unwrap_or(30);
    let current = now.timestamp().div_euclid(step_seconds);
    let generator = totp(Algorithm::SHA1, DIGITS, secret);
    let mut found = None;
    // Every candidate is computed, so the time taken does not tell which one matched.
    for step in current - SKEW..=current + SKEW {
        let Ok(at) = u64::try_from(step * step_seconds) else {
            continue;
        };
        let expected = generator.generate(at);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

/// What an authenticator app needs: the `otpauth://` URI and its QR code as base64 PNG.
pub fn provisioning(secret: &[u8], issuer: &str, account: &str) -> Result<(String, String)> {
    // The label's parts may not contain ':' (the URI uses it as the separator).
    let clean = |text: &str| text.replace(':', " ").trim().to_owned();
    let generator = TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECONDS,
        secret.to_vec(),
        Some(clean(issuer)),
        clean(account),
    )
    .map_err(|err| Error::internal(format!("totp: {err}")))?;
    let uri = generator.get_url();
    let qr = generator
        .get_qr_base64()
        .map_err(|err| Error::internal(format!("qr code: {err}")))?;
    Ok((uri, qr))
}

/// The secret as base32 without padding (what apps accept when typed in).
pub fn secret_base32(secret: &[u8]) -> String {
    totp(Algorithm::SHA1, DIGITS, secret).get_secret_base32()
}

/// New random backup codes, formatted `xxxxx-xxxxx`.
pub fn new_backup_codes() -> Vec<String> {
    let mut rng = rand::rng();
    (0..BACKUP_CODE_COUNT)
        .map(|_| {
            let raw: String = (0..BACKUP_CODE_LEN)
                .map(|_| char::from(BACKUP_ALPHABET[rng.random_range(0..BACKUP_ALPHABET.len())]))
                .collect();
            format!("{}-{}", &raw[..5], &raw[5..])
        })
        .collect()
}

/// A typed backup code without dashes and spaces, lower-cased; `None` when it cannot be one.
fn normalize_backup_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    (code.len() == BACKUP_CODE_LEN && code.bytes().all(|b| BACKUP_ALPHABET.contains(&b)))
        .then_some(code)
}

/// The stored form of a backup code: HMAC-SHA256 under a derived key, bound to its user.
fn backup_code_hash(key: &[u8; 32], tenant_id: TenantId, user_id: UserId, code: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
    mac.update(tenant_id.0.as_bytes());
    mac.update(user_id.0.as_bytes());
    mac.update(code.as_bytes());
    format!("{:x}", mac.finalize().into_bytes())
}

/// How a second factor was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// A code from the authenticator app.
    Totp,
    /// A backup code (now spent).
    BackupCode,
}

impl SecondFactor {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::BackupCode => "backup_code",
        }
    }
}

/// What an authenticator app needs to enrol.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_png_base64: String,
}

/// A confirmed enrolment: the backup codes (shown once) and a fresh access token.
#[derive(Debug, Clone)]
pub struct Confirmed {
    pub backup_codes: Vec<String>,
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
}

/// Two-factor state of one user.
#[derive(Debug, Clone)]
pub struct TwoFactorStatus {
    pub user_id: UserId,
    pub enabled: bool,
    pub pending: bool,
    pub enabled_at: Option<DateTime<Utc>>,
    pub backup_codes_remaining: u64,
    pub required_by_account: bool,
}

impl App {
    fn secret_box(&self) -> Result<SecretBox> {
        SecretBox::new(&self.tokens.derive_key(SECRET_KEY_PURPOSE))
    }

    fn hash_backup_codes(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
        codes: &[String],
    ) -> Vec<String> {
        let key = self.tokens.derive_key(BACKUP_KEY_PURPOSE);
        codes
            .iter()
            .filter_map(|code| normalize_backup_code(code))
            .map(|code| backup_code_hash(&key, tenant_id, user_id, &code))
            .collect()
    }

    /// Checks (and spends) a second factor of `user`: a current TOTP code whose step was not used
    /// yet, or an unused backup code. `None` for anything else.
    pub(crate) async fn check_second_factor(
        &self,
        user: &User,
        code: &str,
    ) -> Result<Option<SecondFactor>> {
        let db = self.store.db();
        let Some(enrolment) = store::two_factor::get(db, user.tenant_id, user.id)
            .await?
            .filter(|enrolment| enrolment.confirmed_at.is_some())
        else {
            return Ok(None);
        };
        let code = code.trim();
        if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
            let secret = self.secret_box()?.open(
                &row_binding(user.tenant_id, user.id),
                &enrolment.sealed_secret,
            )?;
            let Some(step) = matching_step(&secret, code, self.clock.now()) else {
                return Ok(None);
            };
            let fresh = store::two_factor::spend_step(db, user.tenant_id, user.id, step).await?;
            return Ok(fresh.then_some(SecondFactor::Totp));
        }
        let Some(code) = normalize_backup_code(code) else {
            return Ok(None);
        };
        let hash = backup_code_hash(
            &self.tokens.derive_key(BACKUP_KEY_PURPOSE),
            user.tenant_id,
            user.id,
            &code,
        );
        let spent = store::two_factor::spend_backup_code(
            db,
            user.tenant_id,
            user.id,
            &hash,
            self.clock.now(),
        )
        .await?;
        Ok(spent.then_some(SecondFactor::BackupCode))
    }

    /// The caller's own user row.
    async fn own_user(&self, principal: &Principal) -> Result<User> {
        self.caller(principal).await
    }

    /// Checks a second factor of the caller for a change of their own settings; a wrong one
    /// counts towards the lockout like a wrong login code.
    async fn require_own_code(
        &self,
        user: &User,
        code: &str,
        client: &ClientInfo,
    ) -> Result<SecondFactor> {
        match self.check_second_factor(user, code).await? {
            Some(factor) => Ok(factor),
            None => {
                self.count_failure(user, client).await?;
                Err(Error::invalid(
                    "code",
                    "is wrong, has expired or was already used",
                ))
            }
        }
    }

    /// Starts (or restarts) the caller's enrolment: a new secret, its URI and QR code.
    pub async fn begin_two_factor_enrollment(&self, principal: &Principal) -> Result<Enrollment> {
        authorize(principal, Action::ManageOwnTwoFactor)?;
        let user = self.own_user(principal).await?;
        let tenant = store::tenants::get(self.store.db(), principal.tenant_id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        let mut secret = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let sealed = self
            .secret_box()?
            .seal(&row_binding(user.tenant_id, user.id), &secret)?;
        let started = store::two_factor::start(
            self.store.db(),
            user.tenant_id,
            user.id,
            &sealed,
            self.clock.now(),
        )
        .await?;
        if !started {
            return Err(Error::precondition(
                "TWO_FACTOR_ALREADY_ENABLED",
                "two-factor authentication is already on: disable it first to enrol again",
            ));
        }
        let (otpauth_uri, qr_png_base64) =
            provisioning(&secret, tenant.name.as_str(), user.email.as_str())?;
        Ok(Enrollment {
            secret_base32: secret_base32(&secret),
            otpauth_uri,
            qr_png_base64,
        })
    }

    /// Confirms the caller's pending enrolment with a first code; returns the backup codes and a
    /// fresh access token for the calling session.
    pub async fn confirm_two_factor(
        &self,
        principal: &Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Confirmed> {
        authorize(principal, Action::ManageOwnTwoFactor)?;
        let user = self.own_user(principal).await?;
        let db = self.store.db();
        let enrolment = store::two_factor::get(db, user.tenant_id, user.id).await?;
        let enrolment = match enrolment {
            Some(enrolment) if enrolment.confirmed_at.is_none() => enrolment,
            Some(_) => {
                return Err(Error::precondition(
                    "TWO_FACTOR_ALREADY_ENABLED",
                    "two-factor authentication is already on",
                ));
            }
            None => {
                return Err(Error::precondition(
                    "TWO_FACTOR_NOT_STARTED",
                    "begin the enrolment first (BeginTwoFactorEnrollment)",
                ));
            }
        };
        let secret = self.secret_box()?.open(
            &row_binding(user.tenant_id, user.id),
            &enrolment.sealed_secret,
        )?;
        let now = self.clock.now();
        let Some(step) = matching_step(&secret, code.trim(), now) else {
            return Err(Error::invalid(
                "code",
                "is not the code the authenticator app shows now",
            ));
        };
        let codes = new_backup_codes();
        let hashes = self.hash_backup_codes(user.tenant_id, user.id, &codes);
        let tx = self.change().await?;
        if !store::two_factor::confirm(&tx, user.tenant_id, user.id, step, now).await? {
            return Err(Error::precondition(
                "TWO_FACTOR_ALREADY_ENABLED",
                "two-factor authentication is already on",
            ));
        }
        store::two_factor::replace_backup_codes(&tx, user.tenant_id, user.id, &hashes, now).await?;
        self.record(
            &tx,
            NewActivity::on_user(
                user.tenant_id,
                Some(user.id),
                "two_factor.enabled",
                user.id,
                client,
            ),
        )
        .await?;
        self.commit(tx).await?;
        let (access_token, access_token_expires_at) = self.reissue(principal).await?;
        Ok(Confirmed {
            backup_codes: codes,
            access_token,
            access_token_expires_at,
        })
    }

    /// Turns the caller's two-factor authentication off, with a current code or a backup code.
    pub async fn disable_two_factor(
        &self,
        principal: &Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<()> {
        authorize(principal, Action::ManageOwnTwoFactor)?;
        let user = self.own_user(principal).await?;
        if !self.has_two_factor(&user).await? {
            return Err(Error::precondition(
                "TWO_FACTOR_NOT_ENABLED",
                "two-factor authentication is not on",
            ));
        }
        if store::tenants::requires_two_factor(self.store.db(), user.tenant_id).await? {
            return Err(Error::precondition(
                "TWO_FACTOR_REQUIRED_BY_ACCOUNT",
                "the account requires two-factor authentication",
            ));
        }
        let factor = self.require_own_code(&user, code, client).await?;
        let tx = self.change().await?;
        store::two_factor::remove(&tx, user.tenant_id, user.id).await?;
        self.record(
            &tx,
            NewActivity::on_user(
                user.tenant_id,
                Some(user.id),
                "two_factor.disabled",
                user.id,
                client,
            )
            .with_details(json!({ "confirmed_with": factor.as_str() })),
        )
        .await?;
        self.commit(tx).await
    }

    /// Replaces the caller's backup codes, with a current code.
    pub async fn regenerate_backup_codes(
        &self,
        principal: &Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>> {
        authorize(principal, Action::ManageOwnTwoFactor)?;
        let user = self.own_user(principal).await?;
        if !self.has_two_factor(&user).await? {
            return Err(Error::precondition(
                "TWO_FACTOR_NOT_ENABLED",
                "two-factor authentication is not on",
            ));
        }
        self.require_own_code(&user, code, client).await?;
        let codes = new_backup_codes();
        let hashes = self.hash_backup_codes(user.tenant_id, user.id, &codes);
        let tx = self.change().await?;
        store::two_factor::replace_backup_codes(
            &tx,
            user.tenant_id,
            user.id,
            &hashes,
            self.clock.now(),
        )
        .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                user.tenant_id,
                Some(user.id),
                "two_factor.backup_codes_regenerated",
                user.id,
                client,
            ),
        )
        .await?;
        self.commit(tx).await?;
        Ok(codes)
    }

    /// Two-factor state of the caller, or of another user of the account (users.read).
    pub async fn two_factor_status(
        &self,
        principal: &Principal,
        user_id: Option<UserId>,
    ) -> Result<TwoFactorStatus> {
        let user_id = match user_id {
            Some(user_id) if user_id != principal.user_id => {
                authorize(principal, Action::ReadUsers)?;
                user_id
            }
            _ => {
                authorize(principal, Action::ManageOwnTwoFactor)?;
                principal.user_id
            }
        };
        let user = self.target(principal.tenant_id, user_id).await?;
        let db = self.store.db();
        let enrolment = store::two_factor::get(db, user.tenant_id, user.id).await?;
        let enabled_at = enrolment.as_ref().and_then(|e| e.confirmed_at);
        Ok(TwoFactorStatus {
            user_id,
            enabled: enabled_at.is_some(),
            pending: enrolment.is_some() && enabled_at.is_none(),
            enabled_at,
            backup_codes_remaining: if enabled_at.is_some() {
                store::two_factor::backup_codes_left(db, user.tenant_id, user.id).await?
            } else {
                0
            },
            required_by_account: store::tenants::requires_two_factor(db, user.tenant_id).await?,
        })
    }

    /// The Dialer page's "Reset Google Authenticator": removes a user's enrolment and backup
    /// codes and ends their sessions. Returns the number of sessions ended.
    pub async fn reset_two_factor(
        &self,
        principal: &Principal,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<u64> {
        let target = self.target(principal.tenant_id, user_id).await?;
        policy::authorize_on_user(principal, UserAction::ResetTwoFactor, &target, None)?;
        let now = self.clock.now();
        let db = self.store.db();
        if store::two_factor::get(db, target.tenant_id, target.id)
            .await?
            .is_none()
        {
            return Err(Error::precondition(
                "TWO_FACTOR_NOT_ENABLED",
                "the user has no two-factor enrolment to reset",
            ));
        }
        let sessions = store::sessions::open_sessions(
            db,
            target.tenant_id,
            store::sessions::SessionScope::User(target.id),
            now,
        )
        .await?;
        let tx = self.change().await?;
        store::two_factor::remove(&tx, target.tenant_id, target.id).await?;
        let revoked = self
            .end_all_sessions(&tx, target.tenant_id, &[target.id], "two_factor_reset")
            .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "two_factor.reset",
                target.id,
                client,
            )
            .with_details(json!({ "sessions_ended": sessions.len() })),
        )
        .await?;
        tx.revoke_users(revoked, self.clock.now());
        self.commit(tx).await?;
        Ok(sessions.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD};

    use super::*;

    const SHA1_SEED: &[u8] = b"12345678901234567890";
    const SHA256_SEED: &[u8] = b"12345678901234567890123456789012";
    const SHA512_SEED: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238, Appendix B.
    const VECTORS: &[(u64, &str, &str, &str)] = &[
        (59, "94287082", "46119246", "90693936"),
        (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"),
        (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"),
        (20_000_000_000, "65353130", "77737706", "47863826"),
    ];

    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        for (time, sha1, sha256, sha512) in VECTORS {
            assert_eq!(totp(Algorithm::SHA1, 8, SHA1_SEED).generate(*time), *sha1);
            assert_eq!(
                totp(Algorithm::SHA256, 8, SHA256_SEED).generate(*time),
                *sha256
            );
            assert_eq!(
                totp(Algorithm::SHA512, 8, SHA512_SEED).generate(*time),
                *sha512
            );
            // The 6-digit codes apps show are the last six digits of the same value.
            assert_eq!(code_at(SHA1_SEED, *time), sha1[2..]);
        }
    }

    #[test]
    fn a_code_matches_its_step_and_its_neighbours_only() {
        let at = |seconds: i64| DateTime::from_timestamp(seconds, 0).unwrap();
        let code = code_at(SHA1_SEED, 1_111_111_109);
        let step = 1_111_111_109 / 30;
        assert_eq!(
            matching_step(SHA1_SEED, &code, at(1_111_111_109)),
            Some(step)
        );
        assert_eq!(
            matching_step(SHA1_SEED, &code, at(1_111_111_109 + 30)),
            Some(step)
        );
        assert_eq!(
            matching_step(SHA1_SEED, &code, at(1_111_111_109 - 30)),
            Some(step)
        );
        assert_eq!(
            matching_step(SHA1_SEED, &code, at(1_111_111_109 + 90)),
            None
        );
        assert_eq!(matching_step(SHA1_SEED, "000000", at(59)), None);
    }

    #[test]
    fn the_otpauth_uri_names_the_account_and_carries_the_secret() {
        let (uri, qr) = provisioning(SHA1_SEED, "Acme: Inc", "ann@acme.test").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Acme%20%20Inc:ann%40acme.test?"),
            "{uri}"
        );
        assert!(
            uri.contains(&format!("secret={}", secret_base32(SHA1_SEED))),
            "{uri}"
        );
        assert!(uri.contains("issuer=Acme%20%20Inc"), "{uri}");
        let png = STANDARD.decode(qr).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(secret_base32(SHA1_SEED), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_row() {
        let sealer = SecretBox::new(&[7; 32]).unwrap();
        let row = row_binding(TenantId::new(), UserId::new());
        let sealed = sealer.seal(&row, SHA1_SEED).unwrap();
        assert!(!sealed.contains("1234567890"));
        assert_eq!(sealer.open(&row, &sealed).unwrap(), SHA1_SEED);
        let other_row = row_binding(TenantId::new(), UserId::new());
        assert!(sealer.open(&other_row, &sealed).is_err());
        assert!(
            SecretBox::new(&[8; 32])
                .unwrap()
                .open(&row, &sealed)
                .is_err()
        );
        // The same secret sealed twice differs (random nonces).
        assert_ne!(sealed, sealer.seal(&row, SHA1_SEED).unwrap());
    }

    #[test]
    fn backup_codes_are_distinct_and_read_back_however_they_are_typed() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), BACKUP_CODE_COUNT);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), BACKUP_CODE_COUNT);
        for code in &codes {
            assert_eq!(code.len(), BACKUP_CODE_LEN + 1);
            let typed = format!(" {} ", code.to_uppercase().replace('-', " "));
            assert_eq!(
                normalize_backup_code(&typed).unwrap(),
                code.replace('-', "")
            );
        }
        assert_eq!(normalize_backup_code("123456"), None);
        assert_eq!(normalize_backup_code("abcde-fghi0"), None);
        let key = [1; 32];
        let (tenant, user) = (TenantId::new(), UserId::new());
        let hash = backup_code_hash(&key, tenant, user, "abcdefghij");
        assert_eq!(hash.len(), 64);
        assert_ne!(
            hash,
            backup_code_hash(&key, tenant, UserId::new(), "abcdefghij")
        );
    }
}
