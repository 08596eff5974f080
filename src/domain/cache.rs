//! A per-replica cache of users and accounts as last read from the database, for the reads that
//! every page load makes (WhoAmI, GetUser).
//!
//! Entries carry the [`WriteEpoch`](crate::store::WriteEpoch) they were read at and are served
//! only while it has not moved: any write committed on this replica moves it at its commit, and
//! one committed on another replica moves it when its activity announcement arrives (PostgreSQL
//! NOTIFY, within milliseconds). So a read after a write never sees the older state here, and
//! on another replica sees it no longer than a notification takes. Writes are rare next to these
//! reads; a burst of them only costs misses.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::App;
use crate::{
    model::{Result, Tenant, TenantId, User, UserId},
    store,
};

/// Users kept per replica (about a kilobyte each).
const USERS: usize = 50_000;
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

    /// The value read at `epoch`, if it is still kept.
    fn fresh(&self, key: &K, epoch: u64) -> Option<Arc<V>> {
        self.entries
            .get(key)
            .filter(|hit| hit.epoch == epoch)
            .map(|hit| hit.value)
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
        Self {
            users: EpochCache::new(USERS),
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
        let epoch = self.store.writes().current();
        let key = (tenant_id, user_id);
        if let Some(hit) = self.cache.users.fresh(&key, epoch) {
            return Ok(Some(hit));
        }
        let found = store::users::get(self.store.db(), tenant_id, user_id).await?;
        Ok(self.cache.users.keep(key, epoch, found))
    }

    /// An account, from the cache when nothing was written since it was read.
    pub(crate) async fn cached_tenant(&self, tenant_id: TenantId) -> Result<Option<Arc<Tenant>>> {
        let epoch = self.store.writes().current();
        if let Some(hit) = self.cache.tenants.fresh(&tenant_id, epoch) {
            return Ok(Some(hit));
        }
        let found = store::tenants::get(self.store.db(), tenant_id).await?;
        Ok(self.cache.tenants.keep(tenant_id, epoch, found))
    }
}
