//! Brute-force protection: failed passwords and second-factor codes lock a user (status LOCKED)
//! after a configurable number of attempts, until an admin unlocks them or a cool-down passes.
//!
//! Unknown logins are counted too (in memory, per replica), so that after as many failures they
//! answer ACCOUNT_LOCKED exactly like a real user: the lockout does not tell who exists.

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::App;
use crate::{
    model::{ClientInfo, Error, Login, NewActivity, Result, TenantRef, User, UserStatus},
    store,
};

/// Unknown logins remembered at most (oldest forgotten first when full).
const MAX_UNKNOWN: usize = 100_000;

/// The refusal of a locked user (and of an unknown login failed as often).
pub fn account_locked() -> Error {
    Error::precondition(
        "ACCOUNT_LOCKED",
        "the account is locked after too many failed attempts: try again later or ask an administrator to unlock it",
    )
}

/// Whether `user` may sign in from the client's address: always, unless the Dialer's extended IP
/// ACL is on, in which case only from an allowed network (an unknown address is refused).
pub fn network_allows(user: &User, client: &ClientInfo) -> bool {
    match &user.dialer_profile {
        Some(profile) if profile.extended_ip_acl => client
            .address
            .as_deref()
            .and_then(|address| address.parse::<std::net::IpAddr>().ok())
            .is_some_and(|address| profile.allows(address)),
        _ => true,
    }
}

#[derive(Debug, Clone, Copy)]
struct UnknownFailures {
    count: u32,
    last: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
}

/// Failed logins of accounts and logins that do not exist.
#[derive(Debug, Default)]
pub struct LoginGuard {
    unknown: Mutex<HashMap<[u8; 32], UnknownFailures>>,
}

fn unknown_key(tenant: &TenantRef, login: &Login) -> [u8; 32] {
    let tenant = match tenant {
        TenantRef::Id(id) => id.to_string(),
        TenantRef::Slug(slug) => slug.clone(),
    };
    Sha256::digest(format!("{tenant}\u{0}{}", login.as_str())).into()
}

impl LoginGuard {
    /// Whether an unknown login is "locked" now.
    pub fn unknown_locked(&self, tenant: &TenantRef, login: &Login, now: DateTime<Utc>) -> bool {
        self.unknown
            .lock()
            .ok()
            .and_then(|unknown| unknown.get(&unknown_key(tenant, login)).copied())
            .and_then(|entry| entry.locked_until)
            .is_some_and(|until| until > now)
    }

    /// Counts a failure of an unknown login; true when it reaches the lockout.
    pub fn fail_unknown(
        &self,
        tenant: &TenantRef,
        login: &Login,
        now: DateTime<Utc>,
        threshold: u32,
        cooldown: chrono::Duration,
    ) -> bool {
        let Ok(mut unknown) = self.unknown.lock() else {
            return false;
        };
        if unknown.len() >= MAX_UNKNOWN {
            let horizon = now - cooldown;
            unknown.retain(|_, entry| entry.last > horizon);
            if unknown.len() >= MAX_UNKNOWN {
                unknown.clear();
            }
        }
        let entry = unknown
            .entry(unknown_key(tenant, login))
            .or_insert(UnknownFailures {
                count: 0,
                last: now,
                locked_until: None,
            });
        // A lock that has run out starts the count again, as for real users.
        if entry.locked_until.is_some_and(|until| until <= now) {
            *entry = UnknownFailures {
                count: 0,
                last: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        entry.last = now;
        if entry.count >= threshold {
            entry.locked_until = Some(now + cooldown);
            true
        } else {
            false
        }
    }

    /// Forgets entries that no longer matter.
    pub fn prune(&self, now: DateTime<Utc>, cooldown: chrono::Duration) {
        if let Ok(mut unknown) = self.unknown.lock() {
            let horizon = now - cooldown;
            unknown.retain(|_, entry| {
                entry.last > horizon || entry.locked_until.is_some_and(|until| until > now)
            });
        }
    }
}

impl App {
    /// Whether `user` is locked now. A lock whose cool-down has passed is lifted here (the user
    /// becomes ACTIVE again), so the next check finds them unlocked.
    pub(crate) async fn is_locked(&self, user: &User) -> Result<bool> {
        if user.status != UserStatus::Locked {
            return Ok(false);
        }
        let now = self.clock.now();
        let lockout = store::lockouts::get(self.store.db(), user.tenant_id, user.id).await?;
        match lockout.locked_until {
            Some(until) if until <= now => {
                let tx = self.change().await?;
                store::users::set_status(&tx, user.tenant_id, &[user.id], UserStatus::Active, now)
                    .await?;
                store::lockouts::clear(&tx, user.tenant_id, user.id).await?;
                self.record(
                    &tx,
                    NewActivity::on_user(
                        user.tenant_id,
                        None,
                        "user.unlocked",
                        user.id,
                        &ClientInfo::default(),
                    )
                    .with_details(json!({ "reason": "cooldown" })),
                )
                .await?;
                self.commit(tx).await?;
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// Counts a failed password or second-factor code of `user`; at the threshold the user is
    /// LOCKED for the cool-down. Returns whether the user is locked now.
    pub(crate) async fn count_failure(&self, user: &User, client: &ClientInfo) -> Result<bool> {
        let now = self.clock.now();
        let db = self.store.db();
        // A lock lifted meanwhile (cool-down, unlock, reactivation) starts the count again.
        if store::lockouts::get(db, user.tenant_id, user.id)
            .await?
            .locked_until
            .is_some()
        {
            store::lockouts::clear(db, user.tenant_id, user.id).await?;
        }
        let failures = store::lockouts::count_failure(db, user.tenant_id, user.id, now).await?;
        let threshold = i32::try_from(self.policies.lockout_threshold).unwrap_or(i32::MAX);
        if failures < threshold {
            return Ok(false);
        }
        let until = now + self.policies.lockout_cooldown;
        let tx = self.change().await?;
        store::users::set_status(&tx, user.tenant_id, &[user.id], UserStatus::Locked, now).await?;
        store::lockouts::lock(&tx, user.tenant_id, user.id, until).await?;
        self.record(
            &tx,
            NewActivity::on_user(user.tenant_id, None, "user.locked", user.id, client)
                .with_details(json!({ "failed_attempts": failures, "locked_until": until })),
        )
        .await?;
        self.commit(tx).await?;
        tracing::warn!(tenant_id = %user.tenant_id, user_id = %user.id, failures, "user locked after failed attempts");
        Ok(true)
    }

    /// Forgets the failed attempts of `user` after a success.
    pub(crate) async fn clear_failures(&self, user: &User) -> Result<()> {
        let db = self.store.db();
        let lockout = store::lockouts::get(db, user.tenant_id, user.id).await?;
        if lockout.failed_attempts > 0 || lockout.locked_until.is_some() {
            store::lockouts::clear(db, user.tenant_id, user.id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_logins_lock_after_the_threshold_and_unlock_after_the_cooldown() {
        let guard = LoginGuard::default();
        let tenant = TenantRef::Slug("acme".into());
        let login = Login::parse("login", "nobody@acme.test").unwrap();
        let now = Utc::now();
        let cooldown = chrono::Duration::minutes(15);
        assert!(!guard.fail_unknown(&tenant, &login, now, 3, cooldown));
        assert!(!guard.fail_unknown(&tenant, &login, now, 3, cooldown));
        assert!(!guard.unknown_locked(&tenant, &login, now));
        assert!(guard.fail_unknown(&tenant, &login, now, 3, cooldown));
        assert!(guard.unknown_locked(&tenant, &login, now));
        let later = now + cooldown + chrono::Duration::seconds(1);
        assert!(!guard.unknown_locked(&tenant, &login, later));
        assert!(!guard.fail_unknown(&tenant, &login, later, 3, cooldown));
        let other = Login::parse("login", "other@acme.test").unwrap();
        assert!(!guard.unknown_locked(&tenant, &other, now));
    }
}
