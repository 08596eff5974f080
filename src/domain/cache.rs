//! A per-replica cache of users and accounts as last read from the database, for the reads that
//! every page load makes (WhoAmI, GetUser).
//!
//! Entries carry the [`WriteEpoch`](crate::store::WriteEpoch) they were read at and are served
//! only while no write since touched them: any write committed on this replica moves the epoch at
//! its commit, saying what it touched (a sign-in touches only its user; a write that does not say
//! touches everything), and one committed on another replica moves it when its activity
//! announcement arrives (PostgreSQL NOTIFY, within milliseconds; it touches that account). So a
//! read after a write never sees the older state here, and on another replica sees it no longer
//! than a notification takes, while the sign-ins of other users leave an entry alone.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::App;
use crate::{
    model::{Result, Tenant, TenantId, User, UserId},
    store,
};

/// Users kept per replica by default (about a kilobyte each; `ROSTER_USER_CACHE_ENTRIES`).
pub const USERS: usize = 50_000;
/// Accounts kept per replica.
const TENANTS: usize = 10_000;

/// A value and the write epoch it was read at.
struct Stamped<V> {
    epoch: u64,
    value: Arc<V>,
}

impl<V> Clone for Stamped<V> {
    fn clone(&self) -> Self {
        Self {
            epoch: self.epoch,
            value: self.value.clone(),
        }
    }
}

/// Values keyed by `K`, each good while the write epoch is the one it was read at.
struct EpochCache<K, V> {
    entries: Cache<K, Stamped<V>>,
}

impl<K: Eq + std::hash::Hash + Clone, V> EpochCache<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity),
        }
    }

    /// The value kept for `key`, if it was read at `epoch` or `untouched_since` says that no
    /// write since it was read changed it (it is then stamped `epoch`, to look no further back
    /// next time).
    fn fresh(&self, key: &K, epoch: u64, untouched_since: impl Fn(u64) -> bool) -> Option<Arc<V>> {
        let hit = self.entries.get(key)?;
        if hit.epoch == epoch {
            return Some(hit.value);
        }
        if !untouched_since(hit.epoch) {
            return None;
        }
        self.entries.insert(
            key.clone(),
            Stamped {
                epoch,
                value: hit.value.clone(),
            },
        );
        Some(hit.value)
    }

    /// Keeps what a read started at `epoch` found (`None`: nothing, which is not kept).
    fn keep(&self, key: K, epoch: u64, found: Option<V>) -> Option<Arc<V>> {
        let Some(found) = found else {
            self.entries.remove(&key);
            return None;
        };
        let value = Arc::new(found);
        self.entries.insert(
            key,
            Stamped {
                epoch,
                value: value.clone(),
            },
        );
        Some(value)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The cached reads.
pub struct ReadCache {
    users: EpochCache<(TenantId, UserId), User>,
    tenants: EpochCache<TenantId, Tenant>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self::new(USERS)
    }
}

impl ReadCache {
    /// Entries held: users, accounts.
    pub fn sizes(&self) -> [(&'static str, usize); 2] {
        [
            ("users", self.users.len()),
            ("accounts", self.tenants.len()),
        ]
    }

    /// A cache of at most `users` users (and the default bound of accounts).
    pub fn new(users: usize) -> Self {
        Self {
            users: EpochCache::new(users),
            tenants: EpochCache::new(TENANTS),
        }
    }
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("users", &self.users.len())
            .field("tenants", &self.tenants.len())
            .finish()
    }
}

impl App {
    /// A user of the account, from the cache when nothing was written since it was read.
    pub(crate) async fn cached_user(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<Option<Arc<User>>> {
        // Read the epoch first: a write committed while the query runs moves it past this one.
        let writes = self.store.writes();
        let epoch = writes.current();
        let key = (tenant_id, user_id);
        let untouched =
            |read_at| writes.untouched_between(read_at, epoch, tenant_id, Some(user_id));
        if let Some(hit) = self.cache.users.fresh(&key, epoch, untouched) {
            return Ok(Some(hit));
        }
        let found = store::users::get(self.store.db(), tenant_id, user_id).await?;
        Ok(self.cache.users.keep(key, epoch, found))
    }

    /// An account, from the cache when nothing was written since it was read.
    pub(crate) async fn cached_tenant(&self, tenant_id: TenantId) -> Result<Option<Arc<Tenant>>> {
        let writes = self.store.writes();
        let epoch = writes.current();
        let untouched = |read_at| writes.untouched_between(read_at, epoch, tenant_id, None);
        if let Some(hit) = self.cache.tenants.fresh(&tenant_id, epoch, untouched) {
            return Ok(Some(hit));
        }
        let found = store::tenants::get(self.store.db(), tenant_id).await?;
        Ok(self.cache.tenants.keep(tenant_id, epoch, found))
    }
}
