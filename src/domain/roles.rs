//! Roles and permissions: the catalogue, custom roles, role changes that bite on the next call.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::{
    App,
    policy::{self, Action, EditScope, UserAction},
    tokens::{CurrentGrant, RevocationEvent},
};
use crate::{
    model::{
        ALL_PERMISSIONS, ClientInfo, Error, NewActivity, Principal, Result, RoleDef, RoleScope,
        TenantId, User, UserId, builtin_role, builtin_roles, effective_permissions,
    },
    store,
};

/// A user's roles by scope, for ChangeUserRole. `None` leaves that scope as it is.
#[derive(Debug, Clone, Default)]
pub struct RoleChange {
    pub account_roles: Option<Vec<String>>,
    /// `Some(None)` removes the Platform role.
    pub platform_role: Option<Option<String>>,
    /// `Some(None)` removes the Inbox role.
    pub inbox_role: Option<Option<String>>,
}

impl App {
    /// Looks up role keys (built-in or the account's custom roles); an unknown key is an error
    /// naming `field`, and so is a second Platform or Inbox role.
    pub async fn resolve_roles(
        &self,
        tenant_id: TenantId,
        keys: &[String],
        field: &str,
    ) -> Result<Vec<RoleDef>> {
        let custom_keys: Vec<String> = keys
            .iter()
            .filter(|key| builtin_role(key).is_none())
            .cloned()
            .collect();
        let custom: HashMap<String, RoleDef> =
            store::roles::find_many(self.store.db(), tenant_id, &custom_keys)
                .await?
                .into_iter()
                .map(|role| (role.key.clone(), role))
                .collect();
        let mut resolved = Vec::with_capacity(keys.len());
        for key in keys {
            match builtin_role(key).or_else(|| custom.get(key).cloned()) {
                Some(role) => resolved.push(role),
                None => return Err(Error::invalid(field, format!("unknown role {key:?}"))),
            }
        }
        for scope in [RoleScope::Platform, RoleScope::Inbox] {
            if resolved.iter().filter(|role| role.scope == scope).count() > 1 {
                return Err(Error::invalid(
                    field,
                    format!(
                        "a user holds at most one {} role",
                        scope.as_str().to_lowercase()
                    ),
                ));
            }
        }
        Ok(resolved)
    }

    /// Checks that every key names a built-in or custom role of the account (filters).
    pub async fn check_role_keys(
        &self,
        tenant_id: TenantId,
        keys: &[String],
        field: &str,
    ) -> Result<()> {
        let custom: Vec<String> = keys
            .iter()
            .filter(|key| builtin_role(key).is_none())
            .cloned()
            .collect();
        if custom.is_empty() {
            return Ok(());
        }
        let known: HashSet<String> = store::roles::find_many(self.store.db(), tenant_id, &custom)
            .await?
            .into_iter()
            .map(|r| r.key)
            .collect();
        match custom.iter().find(|key| !known.contains(*key)) {
            Some(unknown) => Err(Error::invalid(field, format!("unknown role {unknown:?}"))),
            None => Ok(()),
        }
    }

    /// Checks that the principal may grant `added` and revoke `removed`: Admin and admin-grade
    /// custom roles are the owner's to give.
    pub async fn authorize_roles(
        &self,
        principal: &Principal,
        added: &[String],
        removed: &[String],
    ) -> Result<()> {
        // The fact the policy needs: whether a custom role touched carries admin permissions.
        let custom: Vec<String> = added
            .iter()
            .chain(removed)
            .filter(|key| builtin_role(key).is_none())
            .cloned()
            .collect();
        let admin_grade = !principal.is_owner
            && !custom.is_empty()
            && store::roles::find_many(self.store.db(), principal.tenant_id, &custom)
                .await?
                .iter()
                .any(RoleDef::is_admin_grade);
        policy::authorize_role_change(principal, added, removed, admin_grade)
    }

    /// The effective permissions of a holder of `roles` (unknown keys grant nothing).
    pub async fn permissions_for(
        &self,
        tenant_id: TenantId,
        roles: &[String],
        is_owner: bool,
    ) -> Result<Vec<String>> {
        if is_owner {
            return Ok(effective_permissions(&[], true));
        }
        let custom_keys: Vec<String> = roles
            .iter()
            .filter(|key| builtin_role(key).is_none())
            .cloned()
            .collect();
        let mut defs: Vec<RoleDef> = roles.iter().filter_map(|key| builtin_role(key)).collect();
        defs.extend(store::roles::find_many(self.store.db(), tenant_id, &custom_keys).await?);
        Ok(effective_permissions(&defs, false))
    }

    /// Makes the current roles of `users` bite on their next call, whatever their tokens say,
    /// here and (on PostgreSQL) on the other replicas.
    pub async fn regrant(&self, tenant_id: TenantId, users: &[UserId]) -> Result<()> {
        for (users, grant) in self.current_grants(tenant_id, users).await? {
            self.tokens.revocations().regrant(users, grant);
        }
        Ok(())
    }

    /// [`App::regrant`] on this replica only: for role changes read back from the database (at
    /// start, and when catching up on what notifications may have missed).
    pub async fn reload_grants(&self, tenant_id: TenantId, users: &[UserId]) -> Result<()> {
        for (users, grant) in self.current_grants(tenant_id, users).await? {
            self.tokens
                .revocations()
                .apply(RevocationEvent::Grants(users, grant));
        }
        Ok(())
    }

    /// The current grants of `users`, the users who share one together (a mass change gives
    /// most of them the same roles: one grant to store and to announce, not one per user).
    async fn current_grants(
        &self,
        tenant_id: TenantId,
        users: &[UserId],
    ) -> Result<Vec<(Vec<UserId>, CurrentGrant)>> {
        let now = self.clock.now();
        let owner = store::tenants::get(self.store.db(), tenant_id)
            .await?
            .and_then(|t| t.owner_user_id);
        let custom: HashMap<String, RoleDef> = store::roles::list(self.store.db(), tenant_id)
            .await?
            .into_iter()
            .map(|role| (role.key.clone(), role))
            .collect();
        let mut roles = store::users::roles_of_users(self.store.db(), tenant_id, users).await?;
        let mut groups: HashMap<(Vec<String>, bool), Vec<UserId>> = HashMap::new();
        for user in users {
            let keys = roles.remove(user).unwrap_or_default();
            groups
                .entry((keys, owner == Some(*user)))
                .or_default()
                .push(*user);
        }
        Ok(groups
            .into_iter()
            .map(|((keys, is_owner), users)| {
                let defs: Vec<RoleDef> = keys
                    .iter()
                    .filter_map(|key| builtin_role(key).or_else(|| custom.get(key).cloned()))
                    .collect();
                let grant = CurrentGrant {
                    permissions: effective_permissions(&defs, is_owner),
                    roles: keys,
                    is_owner,
                    at: now,
                };
                (users, grant)
            })
            .collect())
    }

    /// The permission catalogue.
    pub fn permission_catalogue(
        &self,
        principal: &Principal,
    ) -> Result<Vec<(&'static str, &'static str)>> {
        policy::authorize(principal, Action::ReadRoles)?;
        Ok(ALL_PERMISSIONS.to_vec())
    }

    /// Built-in and custom roles of the caller's account.
    pub async fn list_roles(&self, principal: &Principal) -> Result<Vec<RoleDef>> {
        policy::authorize(principal, Action::ReadRoles)?;
        let mut roles = builtin_roles();
        roles.extend(store::roles::list(self.store.db(), principal.tenant_id).await?);
        Ok(roles)
    }

    /// Creates a custom role from catalogue permissions.
    pub async fn create_role(
        &self,
        principal: &Principal,
        role: RoleDef,
        client: &ClientInfo,
    ) -> Result<RoleDef> {
        policy::authorize(principal, Action::ManageRoles)?;
        check_custom_role(principal, &role)?;
        let now = self.clock.now();
        let tx = self.change().await?;
        store::roles::insert(&tx, principal.tenant_id, &role, now).await?;
        self.record(&tx, role_activity(principal, "role.created", &role, client))
            .await?;
        self.commit(tx).await?;
        Ok(role)
    }

    /// Renames a custom role and replaces its permissions; holders feel it on their next call.
    pub async fn update_role(
        &self,
        principal: &Principal,
        role: RoleDef,
        client: &ClientInfo,
    ) -> Result<RoleDef> {
        policy::authorize(principal, Action::ManageRoles)?;
        let current = self.custom_role(principal.tenant_id, &role.key).await?;
        if current.is_admin_grade() {
            policy::authorize_admin_grade_role(principal, "changes")?;
        }
        let role = RoleDef {
            scope: current.scope,
            ..role
        };
        check_custom_role(principal, &role)?;
        let now = self.clock.now();
        let tx = self.change().await?;
        store::roles::update(&tx, principal.tenant_id, &role, now).await?;
        let holders =
            store::users::holders_of_any(&tx, principal.tenant_id, std::slice::from_ref(&role.key))
                .await?;
        store::users::mark_roles_changed(&tx, principal.tenant_id, &holders, now).await?;
        self.record(&tx, role_activity(principal, "role.updated", &role, client))
            .await?;
        // Service accounts holding the role read their permissions again on the next call.
        self.announce_keys_changed(&tx, None).await?;
        self.commit(tx).await?;
        self.api_keys.forget(None);
        self.regrant(principal.tenant_id, &holders).await?;
        Ok(role)
    }

    /// Deletes a custom role; its holders lose it at once.
    pub async fn delete_role(
        &self,
        principal: &Principal,
        key: &str,
        client: &ClientInfo,
    ) -> Result<()> {
        policy::authorize(principal, Action::ManageRoles)?;
        let current = self.custom_role(principal.tenant_id, key).await?;
        if current.is_admin_grade() {
            policy::authorize_admin_grade_role(principal, "deletes")?;
        }
        let now = self.clock.now();
        let tx = self.change().await?;
        let holders =
            store::users::holders_of_any(&tx, principal.tenant_id, &[key.to_owned()]).await?;
        store::users::unassign_role_everywhere(&tx, principal.tenant_id, key).await?;
        store::roles::delete(&tx, principal.tenant_id, key).await?;
        store::users::mark_roles_changed(&tx, principal.tenant_id, &holders, now).await?;
        self.record(
            &tx,
            role_activity(principal, "role.deleted", &current, client),
        )
        .await?;
        self.announce_keys_changed(&tx, None).await?;
        self.commit(tx).await?;
        self.api_keys.forget(None);
        self.regrant(principal.tenant_id, &holders).await
    }

    async fn custom_role(&self, tenant_id: TenantId, key: &str) -> Result<RoleDef> {
        if builtin_role(key).is_some() {
            return Err(Error::precondition(
                "BUILTIN_ROLE",
                "built-in roles cannot be changed or deleted",
            ));
        }
        store::roles::find_many(self.store.db(), tenant_id, &[key.to_owned()])
            .await?
            .pop()
            .ok_or(Error::NotFound("role"))
    }

    /// Sets a user's roles scope by scope (the SMS page's "Change role"); takes effect on the
    /// user's next call.
    pub async fn change_user_role(
        &self,
        principal: &Principal,
        user_id: UserId,
        change: RoleChange,
        client: &ClientInfo,
    ) -> Result<User> {
        let target = self.target(principal.tenant_id, user_id).await?;
        policy::authorize_on_user(principal, UserAction::Edit(EditScope::Roles), &target, None)?;
        let current = self
            .resolve_roles(principal.tenant_id, &target.roles, "roles")
            .await
            .unwrap_or_default();
        let mut next: Vec<String> = Vec::new();
        let parts = [
            (RoleScope::Account, "account_roles", change.account_roles),
            (
                RoleScope::Platform,
                "platform_role",
                change.platform_role.map(|role| role.into_iter().collect()),
            ),
            (
                RoleScope::Inbox,
                "inbox_role",
                change.inbox_role.map(|role| role.into_iter().collect()),
            ),
        ];
        for (scope, field, given) in parts {
            match given {
                Some(keys) => {
                    let defs = self
                        .resolve_roles(principal.tenant_id, &keys, field)
                        .await?;
                    if let Some(role) = defs.iter().find(|role| role.scope != scope) {
                        return Err(Error::invalid(
                            field,
                            format!(
                                "{} is a {} role",
                                role.key,
                                role.scope.as_str().to_lowercase()
                            ),
                        ));
                    }
                    next.extend(keys);
                }
                None => next.extend(
                    current
                        .iter()
                        .filter(|role| role.scope == scope)
                        .map(|role| role.key.clone()),
                ),
            }
        }
        next.sort();
        next.dedup();
        self.set_user_roles(principal, &target, next, "user.roles_changed", client)
            .await
    }

    /// The SMS page's "Remove all permissions": the user keeps no role of any scope.
    pub async fn remove_all_permissions(
        &self,
        principal: &Principal,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<User> {
        let target = self.target(principal.tenant_id, user_id).await?;
        policy::authorize_on_user(principal, UserAction::Edit(EditScope::Roles), &target, None)?;
        self.set_user_roles(
            principal,
            &target,
            Vec::new(),
            "user.permissions_removed",
            client,
        )
        .await
    }

    /// Replaces a user's roles after checking who may grant and revoke them.
    pub(crate) async fn set_user_roles(
        &self,
        principal: &Principal,
        target: &User,
        roles: Vec<String>,
        action: &'static str,
        client: &ClientInfo,
    ) -> Result<User> {
        let before: HashSet<&String> = target.roles.iter().collect();
        let after: HashSet<&String> = roles.iter().collect();
        let added: Vec<String> = after.difference(&before).map(|r| (*r).clone()).collect();
        let removed: Vec<String> = before.difference(&after).map(|r| (*r).clone()).collect();
        self.authorize_roles(principal, &added, &removed).await?;
        let now = self.clock.now();
        let tx = self.change().await?;
        // The user as the change found them: gone is NOT_FOUND, and roles changed meanwhile
        // by another call make this one retryable, since it was judged on the old ones.
        let current = self
            .locked_target(&tx, principal.tenant_id, target.id)
            .await?;
        policy::authorize_on_user(
            principal,
            UserAction::Edit(EditScope::Roles),
            &current,
            None,
        )?;
        if current.roles != target.roles {
            return Err(Error::Aborted(
                "the user's roles changed while the call ran".into(),
            ));
        }
        store::users::replace_labels(
            &tx,
            store::users::Label::Role,
            principal.tenant_id,
            target.id,
            &roles,
        )
        .await?;
        store::users::mark_roles_changed(&tx, principal.tenant_id, &[target.id], now).await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                action,
                target.id,
                client,
            )
            .with_details(json!({ "added": added, "removed": removed })),
        )
        .await?;
        self.commit(tx).await?;
        self.regrant(principal.tenant_id, &[target.id]).await?;
        self.target(principal.tenant_id, target.id).await
    }
}

/// A custom role must use catalogue permissions, not shadow a built-in, and be the owner's to
/// create when it carries admin permissions.
fn check_custom_role(principal: &Principal, role: &RoleDef) -> Result<()> {
    if builtin_role(&role.key).is_some() {
        return Err(Error::already_exists("key", "is a built-in role"));
    }
    if role.name.trim().is_empty() || role.name.chars().count() > 100 {
        return Err(Error::invalid("name", "must be 1 to 100 characters"));
    }
    if let Some(unknown) = role
        .permissions
        .iter()
        .find(|p| !ALL_PERMISSIONS.iter().any(|(key, _)| key == *p))
    {
        return Err(Error::invalid(
            "permissions",
            format!("unknown permission {unknown:?} (see ListPermissions)"),
        ));
    }
    if ["roles.assign_admin", "ownership.transfer"]
        .iter()
        .any(|p| role.permissions.iter().any(|q| q == p))
    {
        return Err(Error::invalid(
            "permissions",
            "roles.assign_admin and ownership.transfer belong to the owner alone",
        ));
    }
    if role.is_admin_grade() {
        policy::authorize_admin_grade_role(principal, "creates")?;
    }
    Ok(())
}

fn role_activity(
    principal: &Principal,
    action: &'static str,
    role: &RoleDef,
    client: &ClientInfo,
) -> NewActivity {
    NewActivity {
        tenant_id: principal.tenant_id,
        actor: Some(principal.user_id),
        action,
        target_type: Some("role"),
        target_id: None,
        client: client.clone(),
        details: json!({ "key": role.key, "name": role.name, "scope": role.scope.as_str(), "permissions": role.permissions }),
    }
}
