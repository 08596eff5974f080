//! Secrets that roster must be able to read back are stored sealed: AES-256-GCM under a key
//! derived from the server's token-signing key for one purpose, with associated data that binds
//! a sealed value to its row (and field), so that a value copied to another row does not open.
//! A copy of the database alone reveals none of them. Changing the signing key makes the sealed
//! values unreadable (users enrol in two-factor again; Dialer secrets must be set again).
//!
//! Sealed here: TOTP secrets (see [`super::two_factor`]) and the Dialer profile's CalDAV token
//! and PBX password, which roster never returns but other services may one day need in clear.
//! Every start seals the Dialer secrets it finds in clear (see
//! [`App::seal_clear_profile_secrets`]).

use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::App;
use crate::{
    model::{Error, ProfileSecrets, Result, SEALED_PREFIX, SealedSecrets, TenantId, UserId},
    store,
};

/// Label of the key that seals the Dialer profile's secrets.
const PROFILE_KEY_PURPOSE: &str = "dialer profile secrets v1";

/// Seals and opens secrets with AES-256-GCM (random 96-bit nonces; associated data binds a
/// sealed value to its row).
pub struct SecretBox {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    /// A box with a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Result<Self> {
        let key = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| Error::internal("aes-256-gcm key rejected"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// `v1.` and base64 of nonce, ciphertext and tag.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .map_err(|_| Error::internal("sealing a secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    /// The clear value of [`SecretBox::seal`]'s output, with the same associated data.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>> {
        let unreadable =
            || Error::internal("a sealed secret cannot be opened (was the signing key changed?)");
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|text| STANDARD.decode(text).ok())
            .ok_or_else(unreadable)?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| unreadable())?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| unreadable())?;
        Ok(plain.to_vec())
    }
}

/// Associated data of a user's sealed secret.
pub fn row_binding(tenant_id: TenantId, user_id: UserId) -> Vec<u8> {
    let mut aad = tenant_id.0.as_bytes().to_vec();
    aad.extend_from_slice(user_id.0.as_bytes());
    aad
}

/// The associated data of a Dialer secret: its row and its column.
fn profile_binding(tenant_id: TenantId, user_id: UserId, field: &str) -> Vec<u8> {
    let mut aad = row_binding(tenant_id, user_id);
    aad.extend_from_slice(field.as_bytes());
    aad
}

impl App {
    fn profile_box(&self) -> Result<SecretBox> {
        SecretBox::new(&self.tokens.derive_key(PROFILE_KEY_PURPOSE))
    }

    /// `secrets` as they are stored for the user: each one sealed to its row and field.
    pub fn seal_profile_secrets(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
        secrets: &ProfileSecrets,
    ) -> Result<SealedSecrets> {
        let profile_box = self.profile_box()?;
        let seal = |field: &str, secret: &Option<crate::model::Secret>| {
            secret
                .as_ref()
                .map(|secret| {
                    profile_box.seal(
                        &profile_binding(tenant_id, user_id, field),
                        secret.expose().as_bytes(),
                    )
                })
                .transpose()
        };
        Ok(SealedSecrets {
            caldav_token: seal("caldav_token", &secrets.caldav_token)?,
            pbx_password: seal("pbx_password", &secrets.pbx_password)?,
        })
    }

    /// Seals the Dialer secrets stored in clear by a version before sealing (or by one still
    /// running during a rolling upgrade); returns how many values it sealed. Every start runs it:
    /// a partial index finds those users without reading `users`.
    pub async fn seal_clear_profile_secrets(&self) -> Result<u64> {
        let db = self.store.db();
        let mut sealed = 0;
        for row in store::users::clear_profile_secrets(db).await? {
            let secrets = self.seal_profile_secrets(row.tenant_id, row.user_id, &row.secrets)?;
            // Only a value still in clear is replaced: one set meanwhile is already sealed.
            sealed += store::users::replace_clear_profile_secrets(
                db,
                row.tenant_id,
                row.user_id,
                &row.secrets,
                &secrets,
            )
            .await?;
        }
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialer_secret_opens_only_for_its_user_and_field() {
        let sealer = SecretBox::new(&[7; 32]).unwrap();
        let (tenant_id, user_id) = (TenantId::new(), UserId::new());
        let binding = profile_binding(tenant_id, user_id, "caldav_token");
        let sealed = sealer.seal(&binding, b"caldav-token").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert_eq!(sealer.open(&binding, &sealed).unwrap(), b"caldav-token");
        // Copied to the other column, or to another user's row, it does not open.
        for wrong in [
            profile_binding(tenant_id, user_id, "pbx_password"),
            profile_binding(tenant_id, UserId::new(), "caldav_token"),
            profile_binding(TenantId::new(), user_id, "caldav_token"),
        ] {
            assert!(sealer.open(&wrong, &sealed).is_err());
        }
    }
}
