//! `roster.v1.ServiceAccountService`: machine callers of an account, and their API keys.
//!
//! A key is `rsk_<prefix>_<secret>`: the prefix (12 visible characters) finds it in other
//! systems' logs and in the table, the secret is 256 random bits stored only as its SHA-256.
//! Keys are checked in memory: a key is read from the database the first time a replica sees it
//! and then kept for [`KEY_FRESH_FOR`]; revoking a key, deleting its service account or changing
//! the account's roles drops it on every replica at the commit (a notification inside the
//! transaction on PostgreSQL). When a key was last used is kept in memory and written every
//! [`LAST_USED_EVERY`], never once a call.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::{App, policy, policy::Action, tokens};
use crate::{
    model::{
        ADMIN_GRADE_PERMISSIONS, ApiKey, ApiKeyId, BuiltinRole, ClientInfo, Error, NewActivity,
        Principal, Result, ServiceAccount, ServiceAccountId, ServiceAccountPatch, SessionId,
        TenantId, UserId,
    },
    store::{self, notify},
};

/// How every API key begins.
pub const KEY_PREFIX: &str = "rsk_";
/// Characters of a key's visible prefix.
const PREFIX_CHARS: usize = 12;
/// How long a replica trusts what it read of a key (a lost notification costs this).
pub const KEY_FRESH_FOR: Duration = Duration::from_secs(15);
/// How often last-used times are written.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(30);
/// Longest service account name.
const NAME_CHARS: usize = 100;
/// Longest description.
const DESCRIPTION_CHARS: usize = 400;

/// What a replica knows of a key it has checked.
#[derive(Debug, Clone)]
struct KnownKey {
    key_id: ApiKeyId,
    account_id: ServiceAccountId,
    tenant_id: TenantId,
    secret_hash: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    roles: Vec<String>,
    permissions: Vec<String>,
    read_at: Instant,
}

/// The keys this replica has checked, and when each was last used.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, KnownKey>>,
    /// Service accounts that have called here: their ids, as actors, mark activity records.
    accounts: RwLock<HashSet<uuid::Uuid>>,
    used: Mutex<HashMap<ApiKeyId, DateTime<Utc>>>,
}

impl KeyCache {
    /// Forgets the keys of a service account (all keys for `None`).
    pub fn forget(&self, account: Option<ServiceAccountId>) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        match account {
            Some(account) => keys.retain(|_, key| key.account_id != account),
            None => keys.clear(),
        }
    }

    /// Whether `actor` is a service account that called this replica.
    pub fn is_service_account(&self, actor: UserId) -> bool {
        self.accounts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&actor.0)
    }

    fn last_used(&self, key: ApiKeyId) -> Option<DateTime<Utc>> {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
    }
}

/// A new key: what the caller is shown once, and what is kept.
struct NewKey {
    full: String,
    prefix: String,
    hash: String,
}

fn new_key() -> NewKey {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; PREFIX_CHARS];
    rand::rng().fill_bytes(&mut bytes);
    let prefix: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    let full = format!("{KEY_PREFIX}{prefix}_{}", tokens::random_secret());
    let hash = tokens::token_hash(&full);
    NewKey { full, prefix, hash }
}

/// The prefix of a well-formed key.
fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == PREFIX_CHARS && secret.len() >= 43).then_some(prefix)
}

fn invalid_key() -> Error {
    Error::unauthenticated(
        "INVALID_TOKEN",
        "the API key is invalid, expired or revoked",
    )
}

fn account_name(field: &str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if name.chars().count() > NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("at most {NAME_CHARS} characters, no control characters"),
        ));
    }
    Ok(name.to_owned())
}

fn account_description(field: &str, text: &str) -> Result<String> {
    let text = text.trim();
    if text.chars().count() > DESCRIPTION_CHARS {
        return Err(Error::invalid(
            field,
            format!("at most {DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(text.to_owned())
}

/// A service account to create.
#[derive(Debug, Clone)]
pub struct NewServiceAccount {
    pub name: String,
    pub description: String,
    pub roles: Vec<String>,
}

impl NewServiceAccount {
    /// Checks the name and description (the roles are checked against the account).
    pub fn parse(name: &str, description: &str, roles: Vec<String>) -> Result<Self> {
        let mut violations = crate::model::Violations::default();
        let name = violations.check(account_name("name", name));
        let description = violations.check(account_description("description", description));
        violations.finish()?;
        match (name, description) {
            (Some(name), Some(description)) => Ok(Self {
                name,
                description,
                roles,
            }),
            _ => Err(Error::internal("service account parse left a field unset")),
        }
    }
}

/// Parses a patch's name and description the same way.
pub fn patch_values(
    name: Option<&str>,
    description: Option<&str>,
) -> Result<(Option<String>, Option<String>)> {
    let mut violations = crate::model::Violations::default();
    let name = name.map(|n| violations.check(account_name("service_account.name", n)));
    let description = description
        .map(|d| violations.check(account_description("service_account.description", d)));
    violations.finish()?;
    Ok((name.flatten(), description.flatten()))
}

impl App {
    /// Checks an API key and returns its service account's principal, without a database round
    /// trip unless this replica has not seen the key for [`KEY_FRESH_FOR`].
    pub(crate) async fn authenticate_api_key(&self, key: &str) -> Result<Principal> {
        let prefix = prefix_of(key).ok_or_else(invalid_key)?;
        let now = self.clock.now();
        let cached = self
            .api_keys
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(prefix)
            .filter(|known| known.read_at.elapsed() < KEY_FRESH_FOR)
            .cloned();
        let known = match cached {
            Some(known) => known,
            None => {
                let (stored, hash, account) =
                    store::service_accounts::find_key(self.store.db(), prefix)
                        .await?
                        .ok_or_else(invalid_key)?;
                let permissions = self
                    .permissions_for(account.tenant_id, &account.roles, false)
                    .await?;
                let known = KnownKey {
                    key_id: stored.id,
                    account_id: account.id,
                    tenant_id: account.tenant_id,
                    secret_hash: hash,
                    created_at: stored.created_at,
                    expires_at: stored.expires_at,
                    roles: account.roles,
                    permissions,
                    read_at: Instant::now(),
                };
                self.api_keys
                    .accounts
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(account.id.0);
                self.api_keys
                    .keys
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(prefix.to_owned(), known.clone());
                known
            }
        };
        let presented = tokens::token_hash(key);
        if !bool::from(presented.as_bytes().ct_eq(known.secret_hash.as_bytes())) {
            return Err(invalid_key());
        }
        if known.expires_at.is_some_and(|at| at <= now) {
            return Err(invalid_key());
        }
        self.api_keys
            .used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(known.key_id, now);
        // A validation may be cached by the caller until `expires_at`: never longer than an
        // access token, so that a revocation reaches services that cache.
        let horizon = now + self.tokens.access_ttl();
        Ok(Principal {
            tenant_id: known.tenant_id,
            user_id: UserId(known.account_id.0),
            session_id: SessionId(known.key_id.0),
            roles: known.roles,
            permissions: known.permissions,
            is_owner: false,
            password_change_required: false,
            two_factor_enrollment_required: false,
            issued_at: known.created_at,
            expires_at: known.expires_at.map_or(horizon, |at| at.min(horizon)),
            service_account: true,
        })
    }

    /// Whether a service account's roles are admin-grade (Admin, or a role with an admin
    /// permission): then only the owner manages it.
    async fn admin_grade(&self, account: &ServiceAccount) -> Result<bool> {
        if account.roles.iter().any(|r| r == BuiltinRole::Admin.key()) {
            return Ok(true);
        }
        let permissions = self
            .permissions_for(account.tenant_id, &account.roles, false)
            .await?;
        Ok(permissions
            .iter()
            .any(|p| ADMIN_GRADE_PERMISSIONS.contains(&p.as_str())))
    }

    /// Reads a service account of the caller's account that the caller may manage, locked for
    /// the change.
    async fn managed_account(
        &self,
        db: &impl store::Conn,
        principal: &Principal,
        id: ServiceAccountId,
    ) -> Result<ServiceAccount> {
        policy::authorize(principal, Action::ManageServiceAccounts)?;
        let account = store::service_accounts::get_for_update(db, principal.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("service account"))?;
        if !principal.is_owner && self.admin_grade(&account).await? {
            return Err(Error::denied(
                "SERVICE_ACCOUNT_IS_ADMIN",
                "only the account owner manages a service account with admin permissions",
            ));
        }
        Ok(account)
    }

    /// Tells the other replicas, at the commit, to read the account's keys again (every key for
    /// `None`: a custom role's permissions changed); the caller forgets them here after it.
    pub(crate) async fn announce_keys_changed(
        &self,
        change: &super::change::Change,
        account: Option<ServiceAccountId>,
    ) -> Result<()> {
        if self.store.is_postgres() {
            let payload = account.map_or_else(|| "*".to_owned(), |id| id.to_string());
            store::notify::notify_all(change, notify::SERVICE_ACCOUNTS_CHANNEL, vec![payload])
                .await?;
        }
        Ok(())
    }

    fn account_activity(
        principal: &Principal,
        action: &'static str,
        account: ServiceAccountId,
        client: &ClientInfo,
        details: serde_json::Value,
    ) -> NewActivity {
        NewActivity {
            tenant_id: principal.tenant_id,
            actor: Some(principal.user_id),
            action,
            target_type: Some("service_account"),
            target_id: Some(account.0),
            client: client.clone(),
            details,
        }
    }

    /// Creates a service account with roles (Admin and admin-grade roles: the owner only).
    pub async fn create_service_account(
        &self,
        principal: &Principal,
        new: NewServiceAccount,
        client: &ClientInfo,
    ) -> Result<ServiceAccount> {
        policy::authorize(principal, Action::ManageServiceAccounts)?;
        self.check_role_keys(principal.tenant_id, &new.roles, "roles")
            .await?;
        self.authorize_roles(principal, &new.roles, &[]).await?;
        let now = self.clock.now();
        let account = ServiceAccount {
            id: ServiceAccountId::new(),
            tenant_id: principal.tenant_id,
            name: new.name,
            description: new.description,
            roles: new.roles,
            created_at: now,
            updated_at: now,
        };
        let tx = self.change().await?;
        store::service_accounts::insert(&tx, &account)
            .await
            .map_err(|err| match err {
                Error::AlreadyExists(_) => {
                    Error::already_exists("name", "a service account of this name exists")
                }
                other => other,
            })?;
        self.record(
            &tx,
            Self::account_activity(
                principal,
                "service_account.created",
                account.id,
                client,
                json!({ "name": account.name, "roles": account.roles }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        Ok(account)
    }

    /// One service account of the caller's account.
    pub async fn get_service_account(
        &self,
        principal: &Principal,
        id: ServiceAccountId,
    ) -> Result<ServiceAccount> {
        policy::authorize(principal, Action::ManageServiceAccounts)?;
        store::service_accounts::get(self.store.db(), principal.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("service account"))
    }

    /// A page of the caller's account's service accounts; the bool says whether more follow.
    pub async fn list_service_accounts(
        &self,
        principal: &Principal,
        after: Option<ServiceAccountId>,
        page_size: u64,
    ) -> Result<(Vec<ServiceAccount>, bool)> {
        policy::authorize(principal, Action::ManageServiceAccounts)?;
        let mut accounts = store::service_accounts::list(
            self.store.db(),
            principal.tenant_id,
            after,
            page_size + 1,
        )
        .await?;
        let more = accounts.len() as u64 > page_size;
        accounts.truncate(page_size as usize);
        Ok((accounts, more))
    }

    /// Changes a service account; a change of roles bites on its keys' next call.
    pub async fn update_service_account(
        &self,
        principal: &Principal,
        id: ServiceAccountId,
        patch: ServiceAccountPatch,
        client: &ClientInfo,
    ) -> Result<ServiceAccount> {
        let tx = self.change().await?;
        let mut account = self.managed_account(&tx, principal, id).await?;
        let mut changed = Vec::new();
        if let Some(roles) = patch.roles {
            self.check_role_keys(principal.tenant_id, &roles, "service_account.roles")
                .await?;
            let added: Vec<String> = roles
                .iter()
                .filter(|r| !account.roles.contains(r))
                .cloned()
                .collect();
            let removed: Vec<String> = account
                .roles
                .iter()
                .filter(|r| !roles.contains(r))
                .cloned()
                .collect();
            self.authorize_roles(principal, &added, &removed).await?;
            account.roles = roles;
            changed.push("roles");
        }
        if let Some(name) = patch.name {
            account.name = name;
            changed.push("name");
        }
        if let Some(description) = patch.description {
            account.description = description;
            changed.push("description");
        }
        account.updated_at = self.clock.now();
        store::service_accounts::update(&tx, &account)
            .await
            .map_err(|err| match err {
                Error::AlreadyExists(_) => Error::already_exists(
                    "service_account.name",
                    "a service account of this name exists",
                ),
                other => other,
            })?;
        self.record(
            &tx,
            Self::account_activity(
                principal,
                "service_account.updated",
                id,
                client,
                json!({ "fields": changed }),
            ),
        )
        .await?;
        self.announce_keys_changed(&tx, Some(id)).await?;
        self.commit(tx).await?;
        self.api_keys.forget(Some(id));
        Ok(account)
    }

    /// Deletes a service account; its keys stop working on every replica at once.
    pub async fn delete_service_account(
        &self,
        principal: &Principal,
        id: ServiceAccountId,
        client: &ClientInfo,
    ) -> Result<()> {
        let tx = self.change().await?;
        let account = self.managed_account(&tx, principal, id).await?;
        store::service_accounts::delete(&tx, principal.tenant_id, id).await?;
        self.record(
            &tx,
            Self::account_activity(
                principal,
                "service_account.deleted",
                id,
                client,
                json!({ "name": account.name }),
            ),
        )
        .await?;
        self.announce_keys_changed(&tx, Some(id)).await?;
        self.commit(tx).await?;
        self.api_keys.forget(Some(id));
        Ok(())
    }

    /// Makes a key for a service account; the whole key is returned this once.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        id: ServiceAccountId,
        expires_at: Option<DateTime<Utc>>,
        client: &ClientInfo,
    ) -> Result<(String, ApiKey)> {
        let now = self.clock.now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(Error::invalid("expire_time", "must be in the future"));
        }
        let tx = self.change().await?;
        self.managed_account(&tx, principal, id).await?;
        let made = new_key();
        let key = ApiKey {
            id: ApiKeyId::new(),
            service_account_id: id,
            prefix: made.prefix,
            created_at: now,
            expires_at,
            last_used_at: None,
        };
        store::service_accounts::insert_key(&tx, principal.tenant_id, &key, &made.hash).await?;
        self.record(
            &tx,
            Self::account_activity(
                principal,
                "api_key.created",
                id,
                client,
                json!({ "key_id": key.id.to_string(), "prefix": key.prefix }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        Ok((made.full, key))
    }

    /// The keys of a service account, with when this replica or the table last saw them used.
    pub async fn list_api_keys(
        &self,
        principal: &Principal,
        id: ServiceAccountId,
    ) -> Result<Vec<ApiKey>> {
        self.get_service_account(principal, id).await?;
        let mut keys =
            store::service_accounts::keys(self.store.db(), principal.tenant_id, id).await?;
        for key in &mut keys {
            key.last_used_at = key.last_used_at.max(self.api_keys.last_used(key.id));
        }
        Ok(keys)
    }

    /// Revokes a key: refused on its next call, on every replica.
    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        id: ServiceAccountId,
        key: ApiKeyId,
        client: &ClientInfo,
    ) -> Result<()> {
        let tx = self.change().await?;
        self.managed_account(&tx, principal, id).await?;
        if !store::service_accounts::delete_key(&tx, principal.tenant_id, id, key).await? {
            return Err(Error::NotFound("API key"));
        }
        self.record(
            &tx,
            Self::account_activity(
                principal,
                "api_key.revoked",
                id,
                client,
                json!({ "key_id": key.to_string() }),
            ),
        )
        .await?;
        self.announce_keys_changed(&tx, Some(id)).await?;
        self.commit(tx).await?;
        self.api_keys.forget(Some(id));
        Ok(())
    }
}

/// Writes the keys' last-used times every [`LAST_USED_EVERY`], and at shutdown.
pub async fn record_key_use(app: App, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(LAST_USED_EVERY) => false,
            _ = stop.changed() => true,
        };
        let used: Vec<(ApiKeyId, DateTime<Utc>)> = app
            .api_keys
            .used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(key, at)| (*key, *at))
            .collect();
        if !used.is_empty()
            && let Err(err) = store::service_accounts::record_last_used(app.store.db(), &used).await
        {
            tracing::warn!(error = %err, "recording API keys' last use failed");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_long_random_and_found_by_its_prefix() {
        let one = new_key();
        let two = new_key();
        assert_ne!(one.full, two.full);
        assert!(one.full.starts_with(KEY_PREFIX));
        assert_eq!(prefix_of(&one.full), Some(one.prefix.as_str()));
        // 32 random bytes in the secret: 256 bits.
        let secret = &one.full[KEY_PREFIX.len() + PREFIX_CHARS + 1..];
        assert_eq!(secret.len(), 43);
        assert_eq!(one.hash, tokens::token_hash(&one.full));
        assert!(!one.hash.contains(secret));
        assert_eq!(prefix_of("rsk_short_x"), None);
        assert_eq!(prefix_of("rat2.something"), None);
    }
}
