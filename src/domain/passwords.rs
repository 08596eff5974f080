//! Password hashing with argon2id, off the async runtime and bounded to the number of cores.

use std::sync::{Arc, Mutex};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, PasswordHash, Salt},
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
    workers: Arc<HashWorkers>,
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
    ///
    /// Twice as many jobs as threads may be handed over: one waits beside each running hash, so a
    /// thread that finishes starts the next at once. With only as many jobs as threads, each
    /// thread idled until a runtime thread (which has to win a core from the other hash) woke the
    /// next caller; that gap cost about a tenth of the logins a second on two cores.
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
            permits: Arc::new(Semaphore::new(2 * concurrency.max(1))),
            workers: Arc::new(HashWorkers::start(concurrency.max(1))?),
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
        self.run(move |memory| hash_with_memory(&params, &password, memory))
            .await?
    }

    /// Checks a password against a stored PHC hash; `None` (unknown user, or a user without a
    /// password) checks a dummy hash and never matches.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verification> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let params = self.params.clone();
        let password = password.to_owned();
        let verification = self
            .run(move |memory| verify_with_memory(&params, &password, &stored, memory))
            .await?;
        Ok(Verification {
            matches: known && verification.matches,
            ..verification
        })
    }

    /// Runs `work` on a hashing thread, at most `concurrency` at once; a caller that goes away
    /// while waiting (for a permit, or for a thread) gives up its turn.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T> {
        let queued = crate::metrics::QueuedHash::new();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("password hasher is shutting down".into()))?;
        let (done, result) = tokio::sync::oneshot::channel();
        self.workers.submit(Box::new(move |memory| {
            if done.is_closed() {
                return;
            }
            let _running = queued.start();
            let _ = done.send(work(memory));
        }))?;
        result
            .await
            .map_err(|_| Error::internal("a password hashing thread stopped"))
    }
}

type HashJob = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Long-lived threads that run the hashes, each with its own argon2 working memory reused from
/// hash to hash. Allocating 19 MiB per login cost page faults and, since glibc keeps freed
/// blocks of that size, 19 MiB of resident memory per hash in flight; a thread that stays on its
/// core with its memory also runs each hash as fast as a bare argon2 loop does.
struct HashWorkers {
    jobs: std::sync::mpsc::Sender<HashJob>,
}

impl HashWorkers {
    fn start(threads: usize) -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => {
                                // A panicking hash fails its caller (its sender is dropped),
                                // not the thread.
                                let run = std::panic::AssertUnwindSafe(|| job(&mut memory));
                                if std::panic::catch_unwind(run).is_err() {
                                    memory = Vec::new();
                                }
                            }
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|err| Error::internal(format!("starting a hashing thread: {err}")))?;
        }
        Ok(Self { jobs })
    }

    fn submit(&self, job: HashJob) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| Error::internal("the password hashing threads stopped"))
    }
}

/// The first `count` blocks of `memory`, grown when needed. A stored hash with a larger cost than
/// the configured one (an import) gets a memory of its own, so the pool stays the configured size.
fn hash_with_blocks<T>(
    memory: &mut Vec<Block>,
    count: usize,
    configured: &Params,
    work: impl FnOnce(&mut [Block]) -> T,
) -> T {
    if count > configured.block_count() {
        let mut own = vec![Block::default(); count];
        return work(&mut own);
    }
    if memory.len() < count {
        memory.resize(count, Block::default());
    }
    work(&mut memory[..count])
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Hashes on the current thread with a fresh working memory (for benchmarks and tools).
pub fn hash_blocking(params: &Params, password: &str) -> Result<String> {
    hash_with_memory(params, password, &mut Vec::new())
}

/// Hashes into a PHC string, with `memory` as argon2's working memory.
fn hash_with_memory(params: &Params, password: &str, memory: &mut Vec<Block>) -> Result<String> {
    let failed = |err: &dyn std::fmt::Display| Error::internal(format!("argon2 hash: {err}"));
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let mut output = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    hash_with_blocks(memory, params.block_count(), params, |blocks| {
        argon2(params).hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut output,
            blocks,
        )
    })
    .map_err(|err| failed(&err))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: params.try_into().map_err(|err| failed(&err))?,
        salt: Some(Salt::new(&salt).map_err(|err| failed(&err))?),
        hash: Some(Output::new(&output).map_err(|err| failed(&err))?),
    };
    Ok(hash.to_string())
}

/// Checks `password` against an argon2 PHC hash, with `memory` as argon2's working memory.
fn argon2_matches(
    configured: &Params,
    password: &str,
    hash: &PasswordHash,
    memory: &mut Vec<Block>,
) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let Ok(version) = hash.version.map(Version::try_from).transpose() else {
        return false;
    };
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    let mut output = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params.clone());
    let computed = hash_with_blocks(memory, params.block_count(), configured, |blocks| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut output, blocks)
    });
    // `Output`'s equality is constant-time.
    computed.is_ok() && Output::new(&output).is_ok_and(|output| output == *expected)
}

/// Verifies with `memory` as argon2's working memory (kept between calls, it saves the page
/// faults of a fresh allocation).
pub fn verify_with_memory(
    params: &Params,
    password: &str,
    stored: &str,
    memory: &mut Vec<Block>,
) -> Verification {
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
    let matches = argon2_matches(params, password, &hash, memory);
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
    async fn a_job_waits_beside_each_running_hash_and_is_passed_over_when_its_caller_goes_away() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let hasher = PasswordHasher::new(cheap(), 1).unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel::<()>();
        let running = {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                hasher
                    .run(move |_| {
                        let _ = started.send(());
                        held.recv().is_ok()
                    })
                    .await
            })
        };
        has_started.await.unwrap();
        // The one thread is busy; a second job is still handed over (it holds the last permit)...
        let ran = Arc::new(AtomicBool::new(false));
        let queued = {
            let (hasher, ran) = (hasher.clone(), ran.clone());
            tokio::spawn(
                async move { hasher.run(move |_| ran.store(true, Ordering::SeqCst)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(hasher.permits.available_permits(), 0);
        // ... and its caller gives up before the thread is free.
        queued.abort();
        assert!(queued.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        assert!(running.await.unwrap().unwrap());
        // The thread has moved on past the abandoned job without running it.
        assert_eq!(hasher.run(|_| 7).await.unwrap(), 7);
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[test]
    fn hashes_interoperate_with_the_argon2_crates_own_hasher_and_verifier() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(64, 1, 1, None).unwrap();
        let ours = hash_blocking(&params, "Str0ngPass").unwrap();
        let theirs_verify = argon2(&params).verify_password(b"Str0ngPass", ours.as_str());
        assert!(theirs_verify.is_ok());
        let theirs = argon2(&params)
            .hash_password_with_salt(b"Str0ngPass", b"sixteen byte salt")
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        assert!(verify_with_memory(&params, "Str0ngPass", &theirs, &mut memory).matches);
        // The same memory serves the next verification, of another hash.
        assert!(verify_with_memory(&params, "Str0ngPass", &ours, &mut memory).matches);
        assert!(!verify_with_memory(&params, "Str0ngPasS", &ours, &mut memory).matches);
        // A stored hash with a higher cost than the configured one still verifies.
        let costlier = hash_blocking(&Params::new(128, 1, 1, None).unwrap(), "Str0ngPass").unwrap();
        assert!(verify_with_memory(&params, "Str0ngPass", &costlier, &mut memory).matches);
        assert_eq!(memory.len(), params.block_count());
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
