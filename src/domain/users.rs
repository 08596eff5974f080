//! The user lifecycle: create, read, list, update, delete, deactivate, reactivate, invitations,
//! password resets and ownership transfer.

use std::sync::Arc;

use ipnet::IpNet;
use rand::{Rng, seq::SliceRandom};
use serde_json::json;

use super::{
    App,
    auth::{PURPOSE_ACTIVATION, PURPOSE_INVITATION},
    policy::{self, Action, EditScope, UserAction},
};
use crate::{
    model::{
        AutoDial, ClientInfo, DialerProfile, Email, Error, Extension, Language, NewActivity,
        Password, PersonName, PhoneNumber, Principal, ProfileSecrets, Result, SipSettings,
        TenantId, TimeZone, User, UserId, UserPageRequest, UserStatus, Username,
    },
    store::{self, Touched, users::NewUser},
};

/// A parsed CreateUser request.
#[derive(Debug, Clone)]
pub struct CreateUser {
    pub email: Email,
    pub username: Option<Username>,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub roles: Vec<String>,
    pub tags: Vec<String>,
    pub password: Option<Password>,
    pub dialer_profile: Option<DialerProfile>,
    pub secrets: ProfileSecrets,
    pub return_activation_token: bool,
}

/// A partial update: only the named parts are applied.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<Email>,
    pub username: Option<Username>,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
    pub roles: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    /// Changes to the Dialer profile, applied in order onto the current one.
    pub profile: Vec<ProfileField>,
    /// New write-only secrets; `None` keeps the stored ones.
    pub secrets: ProfileSecrets,
    /// The field paths, for the activity record.
    pub paths: Vec<String>,
}

/// One change to a Dialer profile.
#[derive(Debug, Clone)]
pub enum ProfileField {
    /// Replace (or, with `None`, remove) the whole profile.
    Whole(Option<DialerProfile>),
    OauthEmail(Option<Email>),
    CaldavToken,
    Active(bool),
    AssignLeads(bool),
    ExtendedIpAcl(bool),
    AllowedNetworks(Vec<IpNet>),
    AutoDial(AutoDial),
    CallerIdName(Option<String>),
    CallerIdNumber(Option<PhoneNumber>),
    VirtualExtension(Option<Extension>),
    TimeZone(Option<TimeZone>),
    Language(Option<Language>),
    TenantSuperuser(bool),
    Sip(SipSettings),
}

impl ProfileField {
    /// What the change touches, for authorization.
    fn scope(&self) -> EditScope {
        match self {
            Self::TimeZone(_) | Self::Language(_) => EditScope::OwnProfile,
            Self::CallerIdName(_) | Self::CallerIdNumber(_) | Self::Sip(_) => EditScope::Telephony,
            Self::TenantSuperuser(_) => EditScope::Superuser,
            _ => EditScope::Account,
        }
    }

    fn apply(self, profile: &mut Option<DialerProfile>) {
        if let Self::Whole(whole) = self {
            *profile = whole;
            return;
        }
        let profile = profile.get_or_insert_with(DialerProfile::default);
        match self {
            Self::Whole(_) | Self::CaldavToken => {}
            Self::OauthEmail(value) => profile.oauth_email = value,
            Self::Active(value) => profile.active = value,
            Self::AssignLeads(value) => profile.assign_leads = value,
            Self::ExtendedIpAcl(value) => profile.extended_ip_acl = value,
            Self::AllowedNetworks(value) => profile.allowed_networks = value,
            Self::AutoDial(value) => profile.auto_dial = value,
            Self::CallerIdName(value) => profile.caller_id_name = value,
            Self::CallerIdNumber(value) => profile.caller_id_number = value,
            Self::VirtualExtension(value) => profile.virtual_extension = value,
            Self::TimeZone(value) => profile.timezone = value,
            Self::Language(value) => profile.language = value,
            Self::TenantSuperuser(value) => profile.tenant_superuser = value,
            Self::Sip(value) => profile.sip = value,
        }
    }
}

/// What happens to the former owner in a transfer.
#[derive(Debug, Clone)]
pub enum FormerOwner {
    /// Keeps these roles.
    Roles(Vec<String>),
    /// Is deleted.
    Delete,
}

/// A page of users.
#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<User>,
    pub more: bool,
    pub total_size: Option<u64>,
}

/// A random temporary password that satisfies the policy.
pub fn temporary_password() -> String {
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const LOWER: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
    const DIGITS: &[u8] = b"23456789";
    let mut rng = rand::rng();
    let all: Vec<u8> = [UPPER, LOWER, DIGITS].concat();
    let mut chars: Vec<u8> = vec![
        UPPER[rng.random_range(0..UPPER.len())],
        LOWER[rng.random_range(0..LOWER.len())],
        DIGITS[rng.random_range(0..DIGITS.len())],
    ];
    chars.extend((0..13).map(|_| all[rng.random_range(0..all.len())]));
    chars.shuffle(&mut rng);
    String::from_utf8(chars).unwrap_or_default()
}

impl App {
    /// Loads a user of the principal's account: another account's user is NOT_FOUND.
    pub(crate) async fn target(&self, tenant_id: TenantId, user_id: UserId) -> Result<User> {
        store::users::get(self.store.db(), tenant_id, user_id)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// The caller's own user; UNAUTHENTICATED when it is gone (see [`Error::caller_gone`]).
    pub(crate) async fn caller(&self, principal: &Principal) -> Result<User> {
        self.target(principal.tenant_id, principal.user_id)
            .await
            .map_err(caller_gone_if_missing)
    }

    /// Loads a user of the principal's account inside `tx` and holds them until it ends, so
    /// that a check and the change it allows see the same user; NOT_FOUND when gone.
    pub(crate) async fn locked_target(
        &self,
        tx: &super::change::Change,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<User> {
        store::users::get_for_update(tx, tenant_id, user_id)
            .await?
            .map(|found| found.user)
            .ok_or(Error::NotFound("user"))
    }

    /// Ends every session and access token of `users` at once (here and, through the revocation
    /// list, on the next call).
    pub(crate) async fn end_all_sessions(
        &self,
        tx: &super::change::Change,
        tenant_id: TenantId,
        users: &[UserId],
        reason: &str,
    ) -> Result<Vec<(UserId, i64)>> {
        let now = self.clock.now();
        store::sessions::revoke_for_users(tx, tenant_id, users, reason, now).await?;
        store::users::bump_token_generation(tx, tenant_id, users, now).await
    }

    /// Creates a user and mails their activation (with a password) or invitation (without).
    pub async fn create_user(
        &self,
        principal: &Principal,
        request: CreateUser,
        client: &ClientInfo,
    ) -> Result<(User, Option<String>)> {
        policy::authorize(principal, Action::CreateUsers)?;
        if request
            .dialer_profile
            .as_ref()
            .is_some_and(|profile| profile.tenant_superuser)
        {
            policy::authorize_superuser_change(principal)?;
        }
        if request.roles.is_empty() {
            return Err(Error::invalid("roles", "assign at least one role"));
        }
        self.resolve_roles(principal.tenant_id, &request.roles, "roles")
            .await?;
        self.authorize_roles(principal, &request.roles, &[]).await?;
        let password_hash = match &request.password {
            Some(password) => Some(self.passwords.hash(password.expose()).await?),
            None => None,
        };
        let now = self.clock.now();
        let tenant = store::tenants::get(self.store.db(), principal.tenant_id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        let username = match request.username {
            Some(username) => username,
            None => Username::parse("username", request.email.as_str())?,
        };
        // A taken email also takes the username it defaults to; which unique index the database
        // trips first differs between backends, so name the email first here.
        let (taken_emails, taken_usernames) = store::users::taken_logins(
            self.store.db(),
            principal.tenant_id,
            &[request.email.as_str().to_owned()],
            &[username.as_str().to_owned()],
        )
        .await?;
        if !taken_emails.is_empty() {
            return Err(Error::already_exists(
                "email",
                "is already taken in this account",
            ));
        }
        if !taken_usernames.is_empty() {
            return Err(Error::already_exists(
                "username",
                "is already taken in this account",
            ));
        }
        let user = User {
            id: UserId::new(),
            tenant_id: principal.tenant_id,
            email: request.email,
            username,
            first_name: request.first_name,
            last_name: request.last_name,
            status: UserStatus::PendingConfirmation,
            roles: request.roles,
            is_admin: false,
            tags: request.tags,
            memberships: Vec::new(),
            is_owner: false,
            password_change_required: false,
            caldav_token_set: request.secrets.caldav_token.is_some(),
            pbx_password_set: request.secrets.pbx_password.is_some(),
            dialer_profile: request.dialer_profile,
            created_at: now,
            updated_at: now,
            last_login_at: None,
            email_verified: false,
            pending_email: None,
        };
        let purpose = if password_hash.is_some() {
            PURPOSE_ACTIVATION
        } else {
            PURPOSE_INVITATION
        };
        let tx = self.change().await?;
        store::users::insert(
            &tx,
            &NewUser {
                user: user.clone(),
                password_hash,
                secrets: self.seal_profile_secrets(user.tenant_id, user.id, &request.secrets)?,
            },
        )
        .await?;
        let token = self
            .issue_activation(
                &tx,
                &tenant,
                &user,
                purpose,
                !request.return_activation_token,
            )
            .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "user.created",
                user.id,
                client,
            )
            .with_details(json!({ "roles": user.roles, "invited": purpose == PURPOSE_INVITATION })),
        )
        .await?;
        tx.touching(Touched::Users(user.tenant_id, vec![user.id]));
        self.commit(tx).await?;
        Ok((user, request.return_activation_token.then_some(token)))
    }

    /// One user: anyone may read themself; other users need a permission that reads users.
    pub async fn get_user(&self, principal: &Principal, user_id: UserId) -> Result<Arc<User>> {
        if user_id != principal.user_id {
            policy::authorize(principal, Action::ReadUsers)?;
        } else {
            policy::authorize(principal, Action::ReadSelf)?;
        }
        let found = self.cached_user(principal.tenant_id, user_id).await?;
        match found {
            Some(user) => Ok(user),
            None if user_id == principal.user_id => Err(Error::caller_gone()),
            None => Err(Error::NotFound("user")),
        }
    }

    /// Many users by id, in the order asked (a repeated id repeats its user), and the ids that
    /// name no user of the account. Reading only oneself needs no permission.
    pub async fn batch_get_users(
        &self,
        principal: &Principal,
        ids: &[UserId],
    ) -> Result<(Vec<User>, Vec<UserId>)> {
        if ids.iter().all(|id| *id == principal.user_id) {
            policy::authorize(principal, Action::ReadSelf)?;
        } else {
            policy::authorize(principal, Action::ReadUsers)?;
        }
        let mut unique = ids.to_vec();
        unique.sort();
        unique.dedup();
        let page = UserPageRequest {
            filter: crate::model::UserFilter {
                ids: Some(unique.clone()),
                ..Default::default()
            },
            order: crate::model::UserOrder::Created,
            descending: false,
            page_size: unique.len().max(1) as u64,
            after: None,
        };
        let (found, _) = store::users::list(self.store.db(), principal.tenant_id, &page).await?;
        let by_id: std::collections::HashMap<UserId, User> =
            found.into_iter().map(|user| (user.id, user)).collect();
        let users = ids.iter().filter_map(|id| by_id.get(id).cloned()).collect();
        let missing = unique
            .into_iter()
            .filter(|id| !by_id.contains_key(id))
            .collect();
        Ok((users, missing))
    }

    /// A page of the account's users: reading other users, under the same rule as GetUser.
    pub async fn list_users(
        &self,
        principal: &Principal,
        page: UserPageRequest,
        include_total: bool,
    ) -> Result<UserPage> {
        policy::authorize(principal, Action::ReadUsers)?;
        self.check_role_keys(principal.tenant_id, &page.filter.roles, "filter.roles")
            .await?;
        let db = self.store.db();
        let (users, more) = store::users::list(db, principal.tenant_id, &page).await?;
        let total_size = if include_total {
            Some(store::users::count(db, principal.tenant_id, &page.filter).await?)
        } else {
            None
        };
        Ok(UserPage {
            users,
            more,
            total_size,
        })
    }

    /// Applies a partial update.
    pub async fn update_user(
        &self,
        principal: &Principal,
        user_id: UserId,
        patch: UserPatch,
        client: &ClientInfo,
    ) -> Result<User> {
        let tx = self.change().await?;
        let target = self
            .locked_target(&tx, principal.tenant_id, user_id)
            .await?;
        let mut scopes: Vec<EditScope> = patch.profile.iter().map(ProfileField::scope).collect();
        if patch.email.is_some() || patch.username.is_some() {
            scopes.push(EditScope::Account);
        }
        if patch.first_name.is_some() || patch.last_name.is_some() {
            scopes.push(EditScope::OwnProfile);
        }
        if patch.roles.is_some() {
            scopes.push(EditScope::Roles);
        }
        if patch.tags.is_some() {
            scopes.push(EditScope::Account);
        }
        for scope in scopes {
            policy::authorize_on_user(principal, UserAction::Edit(scope), &target, None)?;
        }
        let mut updated = target.clone();
        let roles_changed = match &patch.roles {
            Some(roles) if *roles != target.roles => {
                let added: Vec<String> = roles
                    .iter()
                    .filter(|r| !target.roles.contains(r))
                    .cloned()
                    .collect();
                let removed: Vec<String> = target
                    .roles
                    .iter()
                    .filter(|r| !roles.contains(r))
                    .cloned()
                    .collect();
                self.resolve_roles(principal.tenant_id, roles, "user.roles")
                    .await?;
                self.authorize_roles(principal, &added, &removed).await?;
                if roles.is_empty() && !target.is_owner {
                    return Err(Error::invalid(
                        "user.roles",
                        "a user needs at least one role",
                    ));
                }
                updated.roles = roles.clone();
                true
            }
            _ => false,
        };
        if let Some(tags) = &patch.tags {
            updated.tags = tags.clone();
        }
        let email_change = patch.email.filter(|email| *email != target.email);
        if let Some(email) = &email_change {
            let (taken, _) = store::users::taken_logins(
                &tx,
                principal.tenant_id,
                &[email.as_str().to_owned()],
                &[],
            )
            .await?;
            if !taken.is_empty() {
                return Err(Error::already_exists(
                    "email",
                    "is already taken in this account",
                ));
            }
        }
        // A user's own change waits for the new address to confirm it (a stolen session cannot
        // redirect the account's mail); an admin's takes effect unconfirmed.
        let self_service =
            user_id == principal.user_id && target.status != UserStatus::PendingConfirmation;
        if let Some(email) = &email_change
            && !self_service
        {
            updated.email = email.clone();
        }
        if let Some(username) = patch.username {
            updated.username = username;
        }
        if let Some(first_name) = patch.first_name {
            updated.first_name = first_name;
        }
        if let Some(last_name) = patch.last_name {
            updated.last_name = last_name;
        }
        for field in patch.profile {
            field.apply(&mut updated.dialer_profile);
        }
        // A whole profile replaced may carry the flag too: judge the outcome, not the path.
        if updated.is_tenant_superuser() != target.is_tenant_superuser() {
            policy::authorize_on_user(
                principal,
                UserAction::Edit(EditScope::Superuser),
                &target,
                None,
            )?;
        }
        if let Some(profile) = &updated.dialer_profile
            && profile.extended_ip_acl
            && profile.allowed_networks.is_empty()
        {
            return Err(Error::invalid(
                "user.dialer_profile.allowed_networks",
                "the extended IP ACL needs at least one allowed network",
            ));
        }
        let now = self.clock.now();
        updated.updated_at = now;
        let sealed = self.seal_profile_secrets(principal.tenant_id, user_id, &patch.secrets)?;
        store::users::update(&tx, &updated, &sealed, now).await?;
        if let Some(email) = &email_change {
            self.change_email(&tx, &target, email, self_service).await?;
        }
        if roles_changed {
            store::users::replace_labels(
                &tx,
                store::users::Label::Role,
                principal.tenant_id,
                user_id,
                &updated.roles,
            )
            .await?;
            store::users::mark_roles_changed(&tx, principal.tenant_id, &[user_id], now).await?;
        }
        if let Some(tags) = &patch.tags {
            store::users::replace_labels(
                &tx,
                store::users::Label::Tag,
                principal.tenant_id,
                user_id,
                tags,
            )
            .await?;
        }
        // The allowed networks travel inside access tokens: a changed IP ACL ends the user's
        // sessions and tokens at once (refresh tokens included), so nothing issued under the
        // old networks goes on working.
        let ip_acl = |user: &User| {
            user.dialer_profile
                .as_ref()
                .filter(|profile| profile.extended_ip_acl)
                .map(|profile| profile.allowed_networks.clone())
        };
        let acl_revoked = if ip_acl(&target) != ip_acl(&updated) {
            self.end_all_sessions(&tx, principal.tenant_id, &[user_id], "ip_acl_changed")
                .await?
        } else {
            Vec::new()
        };
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "user.updated",
                user_id,
                client,
            )
            .with_details(json!({ "fields": patch.paths })),
        )
        .await?;
        tx.revoke_users(acl_revoked, self.clock.now());
        self.commit(tx).await?;
        if roles_changed {
            // The new permissions replace the ones inside the user's tokens on their next call.
            self.regrant(principal.tenant_id, &[user_id]).await?;
        }
        self.target(principal.tenant_id, user_id).await
    }

    /// The mail and state of a change of `target`'s address to `email`, inside the update's
    /// transaction. The old address is told in every case. A pending user gets their activation
    /// (or invitation) again at the new address; an active user's own change waits for the new
    /// address to confirm it; an admin's change leaves the new address unconfirmed until it does.
    async fn change_email(
        &self,
        tx: &super::change::Change,
        target: &User,
        email: &Email,
        self_service: bool,
    ) -> Result<()> {
        let tenant = store::tenants::get(tx, target.tenant_id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        let moved = User {
            email: email.clone(),
            ..target.clone()
        };
        self.queue_mail(
            tx,
            Some(tenant.id),
            &super::mail::email_change_notice(
                target.email.as_str(),
                target.first_name.as_str(),
                tenant.name.as_str(),
                email.as_str(),
                self_service,
            ),
        )
        .await?;
        if target.status == UserStatus::PendingConfirmation {
            let credentials = store::users::get_credentials(tx, target.tenant_id, target.id)
                .await?
                .ok_or(Error::NotFound("user"))?;
            let purpose = if credentials.password_hash.is_some() {
                PURPOSE_ACTIVATION
            } else {
                PURPOSE_INVITATION
            };
            self.issue_activation(tx, &tenant, &moved, purpose, true)
                .await?;
        } else {
            if self_service {
                store::users::set_pending_email(tx, target.tenant_id, target.id, Some(email))
                    .await?;
            } else {
                store::users::mark_email_unverified(tx, target.tenant_id, target.id).await?;
            }
            self.issue_email_confirmation(tx, &tenant, &moved).await?;
        }
        Ok(())
    }

    /// Deletes a user; their sessions end at once and `user.deleted` tells lead owners. Of
    /// concurrent deletions of one user, one succeeds and writes the record; the others find
    /// the user gone (NOT_FOUND).
    pub async fn delete_user(
        &self,
        principal: &Principal,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<()> {
        let tx = self.change().await?;
        store::users::lock_for_deletion(&tx, principal.tenant_id).await?;
        let target = self
            .locked_target(&tx, principal.tenant_id, user_id)
            .await?;
        policy::authorize_on_user(principal, UserAction::Delete, &target, None)?;
        self.record(&tx, deleted_record(principal, &target, client))
            .await?;
        if store::users::delete(&tx, principal.tenant_id, &[user_id]).await? == 0 {
            return Err(Error::NotFound("user"));
        }
        tx.revoke_users(vec![(user_id, i64::MAX)], self.clock.now());
        self.commit(tx).await?;
        Ok(())
    }

    /// Makes a user INACTIVE and ends their sessions.
    pub async fn deactivate_user(
        &self,
        principal: &Principal,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<User> {
        let tx = self.change().await?;
        let target = self
            .locked_target(&tx, principal.tenant_id, user_id)
            .await?;
        policy::authorize_on_user(principal, UserAction::Deactivate, &target, None)?;
        if target.status == UserStatus::Inactive {
            return Err(Error::precondition(
                "ALREADY_INACTIVE",
                "the user is already inactive",
            ));
        }
        let now = self.clock.now();
        store::users::set_status(
            &tx,
            principal.tenant_id,
            &[user_id],
            UserStatus::Inactive,
            now,
        )
        .await?;
        let revoked = self
            .end_all_sessions(&tx, principal.tenant_id, &[user_id], "user_deactivated")
            .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "user.deactivated",
                user_id,
                client,
            ),
        )
        .await?;
        tx.revoke_users(revoked, self.clock.now());
        self.commit(tx).await?;
        self.target(principal.tenant_id, user_id).await
    }

    /// Makes an INACTIVE or LOCKED user ACTIVE; a user who never confirmed their email goes
    /// back to PENDING_CONFIRMATION, which only the activation link ends.
    pub async fn reactivate_user(
        &self,
        principal: &Principal,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<User> {
        let tx = self.change().await?;
        let target = self
            .locked_target(&tx, principal.tenant_id, user_id)
            .await?;
        policy::authorize_on_user(principal, UserAction::Reactivate, &target, None)?;
        if !matches!(target.status, UserStatus::Inactive | UserStatus::Locked) {
            return Err(Error::precondition(
                "NOT_INACTIVE",
                "only an inactive or locked user can be reactivated",
            ));
        }
        store::users::reactivate(&tx, principal.tenant_id, &[user_id], self.clock.now()).await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "user.reactivated",
                user_id,
                client,
            ),
        )
        .await?;
        self.commit(tx).await?;
        self.target(principal.tenant_id, user_id).await
    }

    /// Sends a fresh activation or invitation to a pending user; older links stop working.
    pub async fn resend_invitation(
        &self,
        principal: &Principal,
        user_id: UserId,
        return_token: bool,
        client: &ClientInfo,
    ) -> Result<Option<String>> {
        let tenant = store::tenants::get(self.store.db(), principal.tenant_id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        let tx = self.change().await?;
        let credentials = store::users::get_for_update(&tx, principal.tenant_id, user_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let target = &credentials.user;
        policy::authorize_on_user(principal, UserAction::ResendInvitation, target, None)?;
        if target.status != UserStatus::PendingConfirmation {
            return Err(Error::precondition(
                "USER_NOT_PENDING",
                "the user has already activated their account",
            ));
        }
        let purpose = if credentials.password_hash.is_some() {
            PURPOSE_ACTIVATION
        } else {
            PURPOSE_INVITATION
        };
        let token = self
            .issue_activation(&tx, &tenant, target, purpose, !return_token)
            .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "user.invitation_resent",
                user_id,
                client,
            ),
        )
        .await?;
        self.commit(tx).await?;
        Ok(return_token.then_some(token))
    }

    /// Sets a temporary password (returned once) and ends the user's sessions.
    pub async fn reset_password(
        &self,
        principal: &Principal,
        user_id: UserId,
        require_change: bool,
        client: &ClientInfo,
    ) -> Result<String> {
        let before = store::users::get_credentials(self.store.db(), principal.tenant_id, user_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let actor = self.caller(principal).await?;
        policy::authorize_on_user(
            principal,
            UserAction::ResetPassword,
            &before.user,
            Some(&actor),
        )?;
        // Hashed before the transaction, so that no row waits on argon2.
        let temporary = temporary_password();
        let hash = self.passwords.hash(&temporary).await?;
        let now = self.clock.now();
        let tx = self.change().await?;
        let target = store::users::get_for_update(&tx, principal.tenant_id, user_id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let actor = self
            .locked_target(&tx, principal.tenant_id, principal.user_id)
            .await
            .map_err(caller_gone_if_missing)?;
        policy::authorize_on_user(
            principal,
            UserAction::ResetPassword,
            &target.user,
            Some(&actor),
        )?;
        if target.token_generation != before.token_generation {
            // Another reset (or revocation) came first: its temporary password stands.
            return Err(Error::Aborted(
                "the user's credentials changed while the password was being reset".into(),
            ));
        }
        store::users::set_password_hash(
            &tx,
            principal.tenant_id,
            user_id,
            &hash,
            require_change,
            now,
        )
        .await?;
        let revoked = self
            .end_all_sessions(&tx, principal.tenant_id, &[user_id], "password_reset")
            .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "user.password_reset",
                user_id,
                client,
            )
            .with_details(json!({ "require_change": require_change })),
        )
        .await?;
        tx.revoke_users(revoked, self.clock.now());
        self.commit(tx).await?;
        Ok(temporary)
    }

    /// Passes ownership to an active user; the former owner keeps the given roles or is deleted.
    pub async fn transfer_ownership(
        &self,
        principal: &Principal,
        new_owner: UserId,
        former_owner: FormerOwner,
        client: &ClientInfo,
    ) -> Result<(User, Option<User>)> {
        policy::authorize(principal, Action::TransferOwnership)?;
        if new_owner == principal.user_id {
            return Err(Error::invalid("new_owner_user_id", "is already the owner"));
        }
        if let FormerOwner::Roles(roles) = &former_owner {
            self.resolve_roles(principal.tenant_id, roles, "former_owner_roles.roles")
                .await?;
        }
        let now = self.clock.now();
        let tx = self.change().await?;
        // The conditional write decides between concurrent transfers: one finds the caller still
        // the owner, the others do not.
        if !store::tenants::set_owner(&tx, principal.tenant_id, Some(principal.user_id), new_owner)
            .await?
        {
            // The token predates a transfer: the caller is no longer the owner.
            return Err(Error::denied(
                "OWNER_ONLY",
                "only the account owner can transfer ownership",
            ));
        }
        let successor = self
            .locked_target(&tx, principal.tenant_id, new_owner)
            .await?;
        if successor.status != UserStatus::Active {
            return Err(Error::precondition(
                "NEW_OWNER_NOT_ACTIVE",
                "the new owner must be an active user",
            ));
        }
        let former = self
            .locked_target(&tx, principal.tenant_id, principal.user_id)
            .await
            .map_err(caller_gone_if_missing)?;
        let mut revoked = Vec::new();
        match &former_owner {
            FormerOwner::Roles(roles) => {
                store::users::replace_labels(
                    &tx,
                    store::users::Label::Role,
                    principal.tenant_id,
                    former.id,
                    roles,
                )
                .await?;
                revoked = store::users::bump_token_generation(
                    &tx,
                    principal.tenant_id,
                    &[former.id, new_owner],
                    now,
                )
                .await?;
            }
            FormerOwner::Delete => {
                self.record(&tx, deleted_record(principal, &former, client))
                    .await?;
                store::users::delete(&tx, principal.tenant_id, &[former.id]).await?;
                revoked.extend(
                    store::users::bump_token_generation(
                        &tx,
                        principal.tenant_id,
                        &[new_owner],
                        now,
                    )
                    .await?,
                );
                revoked.push((former.id, i64::MAX));
            }
        }
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "account.ownership_transferred",
                new_owner,
                client,
            )
            .with_details(json!({
                "former_owner": former.id.to_string(),
                "former_owner_deleted": matches!(former_owner, FormerOwner::Delete),
            })),
        )
        .await?;
        tx.revoke_users(revoked, self.clock.now());
        self.commit(tx).await?;
        // Earlier role changes left current grants behind: replace them with the new ownership.
        let mut regranted = vec![new_owner];
        if matches!(former_owner, FormerOwner::Roles(_)) {
            regranted.push(former.id);
        }
        self.regrant(principal.tenant_id, &regranted).await?;
        let new_owner = self.target(principal.tenant_id, new_owner).await?;
        let former = match former_owner {
            FormerOwner::Roles(_) => Some(self.target(principal.tenant_id, former.id).await?),
            FormerOwner::Delete => None,
        };
        Ok((new_owner, former))
    }
}

/// A NOT_FOUND of the caller's own user is a token that names nobody any more.
fn caller_gone_if_missing(err: Error) -> Error {
    match err {
        Error::NotFound(_) => Error::caller_gone(),
        other => other,
    }
}

/// The `user.deleted` record that tells lead-owning services to unassign the user's leads.
pub(crate) fn deleted_record(
    principal: &Principal,
    target: &User,
    client: &ClientInfo,
) -> NewActivity {
    NewActivity::on_user(
        principal.tenant_id,
        Some(principal.user_id),
        "user.deleted",
        target.id,
        client,
    )
    .with_details(json!({ "email": target.email.as_str(), "unassign_leads": true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_passwords_meet_the_policy_and_differ() {
        let first = temporary_password();
        assert!(Password::parse("password", &first).is_ok(), "{first}");
        assert_ne!(first, temporary_password());
    }
}
