//! Password hashing with argon2id, off the async runtime and bounded to the number of cores.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::model::{Error, Result};

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Settings {
    /// Memory in KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// Passes (OWASP: 2).
    pub iterations: u32,
    /// Lanes (OWASP: 1).
    pub parallelism: u32,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// Verified for unknown users, so that their answer takes as long as a wrong password.
    dummy_hash: Arc<String>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish()
    }
}

impl PasswordHasher {
    /// A hasher with `settings`, running at most `concurrency` hashes at once.
    pub fn new(settings: Argon2Settings, concurrency: usize) -> Result<Self> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|err| Error::internal(format!("argon2 parameters: {err}")))?;
        let dummy_hash = hash_blocking(&params, "dummy password for unknown users")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    /// The configured parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.run(move || hash_blocking(&params, &password)).await?
    }

    /// Checks a password against a stored PHC hash; `None` (unknown user, or a user without a
    /// password) checks a dummy hash and never matches.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verification> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let params = self.params.clone();
        let password = password.to_owned();
        let verification = self
            .run(move || verify_blocking(&params, &password, &stored))
            .await?;
        Ok(Verification {
            matches: known && verification.matches,
            ..verification
        })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("password hasher is shutting down".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(Error::internal)
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Hashes on the current thread (for benchmarks and the blocking pool).
pub fn hash_blocking(params: &Params, password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    argon2(params)
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| Error::internal(format!("argon2 hash: {err}")))
}

/// Verifies on the current thread.
pub fn verify_blocking(params: &Params, password: &str, stored: &str) -> Verification {
    if is_bcrypt(stored) {
        // Imported from another system: verify, then rehash with argon2id on this login.
        let matches = bcrypt::verify(password, stored).unwrap_or(false);
        return Verification {
            matches,
            needs_rehash: true,
        };
    }
    let Ok(hash) = PasswordHash::new(stored) else {
        return Verification {
            matches: false,
            needs_rehash: false,
        };
    };
    let matches = argon2(params)
        .verify_password(password.as_bytes(), &hash)
        .is_ok();
    let needs_rehash = hash.algorithm.as_str() != "argon2id"
        || Params::try_from(&hash)
            .map(|stored| {
                stored.m_cost() != params.m_cost()
                    || stored.t_cost() != params.t_cost()
                    || stored.p_cost() != params.p_cost()
            })
            .unwrap_or(true);
    Verification {
        matches,
        needs_rehash,
    }
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| stored.starts_with(prefix))
}

/// Checks that an imported hash is an argon2 or bcrypt PHC/MCF string this server can verify.
pub fn check_imported_hash(stored: &str) -> std::result::Result<(), &'static str> {
    if is_bcrypt(stored) {
        return if stored.len() == 60 {
            Ok(())
        } else {
            Err("is not a valid bcrypt hash")
        };
    }
    match PasswordHash::new(stored) {
        Ok(hash)
            if hash.algorithm.as_str().starts_with("argon2") && Params::try_from(&hash).is_ok() =>
        {
            Ok(())
        }
        _ => Err("must be an argon2 ($argon2id$...) or bcrypt ($2b$...) hash"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Settings {
        Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let hasher = PasswordHasher::new(cheap(), 2).unwrap();
        let hash = hasher.hash("Str0ngPass").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify("Str0ngPass", Some(&hash))
                .await
                .unwrap()
                .matches
        );
        assert!(
            !hasher
                .verify("Str0ngPasS", Some(&hash))
                .await
                .unwrap()
                .matches
        );
        assert!(!hasher.verify("Str0ngPass", None).await.unwrap().matches);
    }

    #[tokio::test]
    async fn imported_bcrypt_hashes_verify_and_ask_for_a_rehash() {
        let hasher = PasswordHasher::new(cheap(), 1).unwrap();
        let bcrypt_hash = bcrypt::hash("Str0ngPass", 4).unwrap();
        assert!(check_imported_hash(&bcrypt_hash).is_ok());
        let verification = hasher
            .verify("Str0ngPass", Some(&bcrypt_hash))
            .await
            .unwrap();
        assert!(verification.matches && verification.needs_rehash);
        assert!(
            !hasher
                .verify("wrong", Some(&bcrypt_hash))
                .await
                .unwrap()
                .matches
        );
        assert!(check_imported_hash("plain text").is_err());
    }

    #[tokio::test]
    async fn changed_parameters_ask_for_a_rehash() {
        let old = PasswordHasher::new(cheap(), 1).unwrap();
        let hash = old.hash("Str0ngPass").await.unwrap();
        assert!(
            !old.verify("Str0ngPass", Some(&hash))
                .await
                .unwrap()
                .needs_rehash
        );
        let new = PasswordHasher::new(
            Argon2Settings {
                memory_kib: 128,
                ..cheap()
            },
            1,
        )
        .unwrap();
        let verification = new.verify("Str0ngPass", Some(&hash)).await.unwrap();
        assert!(verification.matches && verification.needs_rehash);
    }
}
