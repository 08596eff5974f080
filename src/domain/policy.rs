//! Who may do what: the rules of the product pages in one place. Every use case calls these
//! before anything else.
//!
//! - Admins view, add, edit and delete users and assign roles, except the owner and other admins.
//! - Only the owner grants or revokes Admin; nobody deletes the owner; nobody deletes themself.
//! - Users without an admin role see and edit only their own profile (names, time zone, language).
//! - Tech. Configuration may change SIP and caller-ID settings, and so reads the users it edits.
//! - Only the owner grants or revokes tenant superuser access (it carries admin powers).
//! - A user who must change their password may do nothing else first.

use crate::model::{BuiltinRole, Error, Permission, Principal, Result, User};

/// An action a principal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read one's own user and account.
    ReadSelf,
    /// Change one's own password.
    ChangeOwnPassword,
    /// End one's own session.
    EndOwnSession,
    /// Read other users of the account.
    ReadUsers,
    /// Read the role and permission catalogue (everyone, once past the gates).
    ReadRoles,
    /// Create users.
    CreateUsers,
    /// Import users in bulk.
    ImportUsers,
    /// Apply a mass action.
    BulkUpdateUsers,
    /// Delete users by a mass action.
    BulkDeleteUsers,
    /// Pass ownership of the account.
    TransferOwnership,
    /// Create, change and delete custom roles.
    ManageRoles,
    /// Read teams and their members.
    ReadTeams,
    /// Create, change and delete teams and their memberships.
    ManageTeams,
    /// Enrol in, confirm and disable one's own two-factor authentication.
    ManageOwnTwoFactor,
    /// List and end one's own sessions.
    ManageOwnSessions,
    /// List the sessions of other users of the account, and end them (with
    /// [`UserAction::EndSessions`] for each user).
    ManageSessions,
    /// Read the account's activity trail beyond one's own records, and watch it live.
    ReadActivity,
    /// Read and follow the account's event feed.
    ReadEvents,
    /// Create, read, change and delete the account's service accounts and their API keys.
    ManageServiceAccounts,
    /// Create, read, change and delete the account's webhook endpoints; read their deliveries.
    ManageWebhooks,
    /// Read the account's security settings.
    ReadSecuritySettings,
    /// Change the account's security settings (two-factor requirement): the owner's.
    ChangeSecuritySettings,
}

/// What an edit of a user touches, to decide who may make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EditScope {
    /// First and last name, time zone, language: a user's own profile.
    OwnProfile,
    /// SIP and caller-ID settings.
    Telephony,
    /// Email, username and the other Dialer settings.
    Account,
    /// Account roles.
    Roles,
    /// The Dialer's tenant superuser flag, which grants administrator access: the owner's.
    Superuser,
}

/// An action on one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    Edit(EditScope),
    Delete,
    Deactivate,
    Reactivate,
    ResendInvitation,
    ResetPassword,
    /// Remove a user's two-factor enrolment and backup codes.
    ResetTwoFactor,
    /// Lift a lockout.
    Unlock,
    /// End a user's sessions.
    EndSessions,
}

fn denied(reason: &'static str, message: &str) -> Error {
    Error::denied(reason, message)
}

fn require(principal: &Principal, permission: Permission) -> Result<()> {
    if principal.can(permission) {
        Ok(())
    } else {
        Err(denied(
            "MISSING_PERMISSION",
            &format!("this needs the {} permission", permission.key()),
        ))
    }
}

fn password_change_gate(principal: &Principal, action: Action) -> Result<()> {
    let allowed_anyway = matches!(
        action,
        Action::ChangeOwnPassword | Action::ReadSelf | Action::EndOwnSession
    );
    if principal.password_change_required && !allowed_anyway {
        return Err(Error::precondition(
            "PASSWORD_CHANGE_REQUIRED",
            "choose a new password (ChangePassword) before doing anything else",
        ));
    }
    // The account requires two-factor authentication: a user who has not enrolled gets a session
    // that can enrol (and read itself, log out, change its password) and nothing else.
    let enrolment_allows = matches!(
        action,
        Action::ManageOwnTwoFactor
            | Action::ReadSelf
            | Action::EndOwnSession
            | Action::ChangeOwnPassword
    );
    if principal.two_factor_enrollment_required && !enrolment_allows {
        return Err(Error::precondition(
            "TWO_FACTOR_ENROLLMENT_REQUIRED",
            "this account requires two-factor authentication: enrol (TwoFactorService) first",
        ));
    }
    Ok(())
}

/// Permissions that let a principal read the account's other users.
pub const READ_USERS_WITH: [Permission; 4] = [
    Permission::UsersRead,
    Permission::UsersWrite,
    Permission::SipSettingsWrite,
    Permission::CallerIdWrite,
];

/// Granting or revoking the Dialer's tenant superuser flag, on any path (create, update):
/// the flag carries administrator access, so it is the owner's to give.
pub fn authorize_superuser_change(principal: &Principal) -> Result<()> {
    if principal.is_owner {
        Ok(())
    } else {
        Err(denied(
            "OWNER_ONLY",
            "only the account owner grants or revokes tenant superuser access",
        ))
    }
}

/// Allows or refuses an account-level `action`.
pub fn authorize(principal: &Principal, action: Action) -> Result<()> {
    password_change_gate(principal, action)?;
    let own_user = matches!(
        action,
        Action::ReadSelf
            | Action::ChangeOwnPassword
            | Action::EndOwnSession
            | Action::ManageOwnTwoFactor
            | Action::ManageOwnSessions
    );
    if principal.service_account && own_user {
        return Err(denied(
            "SERVICE_ACCOUNT",
            "a service account has no user profile, password, second factor or sessions",
        ));
    }
    match action {
        Action::ReadSelf
        | Action::ChangeOwnPassword
        | Action::EndOwnSession
        | Action::ManageOwnTwoFactor
        | Action::ManageOwnSessions
        | Action::ReadRoles => Ok(()),
        Action::ManageSessions => require(principal, Permission::SessionsManage),
        Action::ReadActivity => require(principal, Permission::ActivityRead),
        Action::ReadEvents => require(principal, Permission::EventsRead),
        Action::ManageServiceAccounts => require(principal, Permission::ServiceAccountsManage),
        Action::ManageWebhooks => require(principal, Permission::WebhooksManage),
        Action::ReadSecuritySettings => require(principal, Permission::UsersRead),
        Action::ChangeSecuritySettings => {
            if principal.is_owner {
                Ok(())
            } else {
                Err(denied(
                    "OWNER_ONLY",
                    "only the account owner changes the account's security settings",
                ))
            }
        }
        Action::ReadUsers => {
            // Whoever may edit users' fields reads those users (Tech. Configuration edits SIP
            // and caller-ID settings); the list and GetUser of another user share this rule.
            if READ_USERS_WITH
                .iter()
                .any(|permission| principal.can(*permission))
            {
                Ok(())
            } else {
                require(principal, Permission::UsersRead)
            }
        }
        Action::CreateUsers | Action::ImportUsers | Action::BulkUpdateUsers => {
            require(principal, Permission::UsersWrite)
        }
        Action::BulkDeleteUsers => {
            require(principal, Permission::UsersWrite)?;
            require(principal, Permission::UsersDelete)
        }
        Action::ManageRoles => require(principal, Permission::RolesManage),
        Action::ReadTeams => require(principal, Permission::TeamsRead),
        Action::ManageTeams => require(principal, Permission::TeamsWrite),
        Action::TransferOwnership => {
            if principal.is_owner {
                Ok(())
            } else {
                Err(denied(
                    "OWNER_ONLY",
                    "only the account owner can transfer ownership",
                ))
            }
        }
    }
}

/// Which activity records the principal reads: the whole account's (`activity.read`), or only
/// those by or about themself (`false`).
pub fn reads_account_activity(principal: &Principal) -> Result<bool> {
    if principal.can(Permission::ActivityRead) {
        authorize(principal, Action::ReadActivity)?;
        Ok(true)
    } else {
        authorize(principal, Action::ReadSelf)?;
        Ok(false)
    }
}

/// Granting or revoking roles: Admin, and any custom role with admin permissions (the domain
/// tells, `touches_admin_grade`), are the owner's to give; the rest needs `roles.assign`.
pub fn authorize_role_change(
    principal: &Principal,
    added: &[String],
    removed: &[String],
    touches_admin_grade: bool,
) -> Result<()> {
    let admin = BuiltinRole::Admin.key();
    let touches_admin = added.iter().chain(removed).any(|role| role == admin);
    if touches_admin && !principal.is_owner {
        return Err(denied(
            "ADMIN_ROLE_OWNER_ONLY",
            "only the account owner grants or revokes the Admin role",
        ));
    }
    if touches_admin_grade && !principal.is_owner {
        return Err(denied(
            "ADMIN_ROLE_OWNER_ONLY",
            "only the account owner grants or revokes roles with admin permissions",
        ));
    }
    if !added.is_empty() || !removed.is_empty() {
        require(principal, Permission::RolesAssign)?;
    }
    Ok(())
}

/// Creating, changing or deleting a custom role with admin permissions is the owner's (`verb`
/// names the act in the refusal).
pub fn authorize_admin_grade_role(principal: &Principal, verb: &str) -> Result<()> {
    if principal.is_owner {
        Ok(())
    } else {
        Err(denied(
            "ADMIN_ROLE_OWNER_ONLY",
            &format!("only the account owner {verb} roles with admin permissions"),
        ))
    }
}

/// What a mass action knows of one selected user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MassTarget {
    pub is_owner: bool,
    pub is_admin: bool,
    pub is_self: bool,
}

/// Why a mass action passes over a selected user, if it does: the owner always, oneself for a
/// deactivation or deletion, and other admins unless the owner acts (as on one user).
pub fn mass_action_protection(
    principal: &Principal,
    target: MassTarget,
    ends_access: bool,
) -> Option<(&'static str, &'static str)> {
    if target.is_owner {
        Some((
            "USER_IS_OWNER",
            "the account owner is not changed by mass actions",
        ))
    } else if ends_access && target.is_self {
        Some(("SELF", "you cannot delete or deactivate yourself"))
    } else if target.is_admin && !target.is_self && !principal.is_owner {
        // Other admins only: as in UpdateUser, an admin may change their own roles.
        Some((
            "USER_IS_ADMIN",
            "admins cannot change other admins; ask the owner",
        ))
    } else {
        None
    }
}

/// Allows or refuses `action` on `target`, a user of the principal's account. `actor` is the
/// principal's own user row where the rule needs it (the Dialer's tenant superuser).
pub fn authorize_on_user(
    principal: &Principal,
    action: UserAction,
    target: &User,
    actor: Option<&User>,
) -> Result<()> {
    password_change_gate(principal, Action::ReadUsers)?;
    let is_self = target.id == principal.user_id;
    // The owner may do anything to anyone but delete or deactivate themself.
    if is_self && matches!(action, UserAction::Delete | UserAction::Deactivate) {
        return Err(denied("SELF", "you cannot delete or deactivate yourself"));
    }
    if target.is_owner && !principal.is_owner {
        return Err(denied(
            "USER_IS_OWNER",
            "only the owner can change the account owner",
        ));
    }
    if principal.is_owner {
        return Ok(());
    }
    let own_profile = is_self && matches!(action, UserAction::Edit(EditScope::OwnProfile));
    if own_profile {
        return Ok(());
    }
    if target.is_admin() && !is_self {
        return Err(denied(
            "USER_IS_ADMIN",
            "admins cannot change other admins; ask the owner",
        ));
    }
    match action {
        UserAction::Edit(EditScope::OwnProfile) | UserAction::Edit(EditScope::Account) => {
            require(principal, Permission::UsersWrite)
        }
        UserAction::Edit(EditScope::Telephony) => {
            if principal.can(Permission::SipSettingsWrite)
                && principal.can(Permission::CallerIdWrite)
            {
                Ok(())
            } else {
                require(principal, Permission::UsersWrite)
            }
        }
        UserAction::Edit(EditScope::Roles) => require(principal, Permission::RolesAssign),
        UserAction::Edit(EditScope::Superuser) => authorize_superuser_change(principal),
        UserAction::Delete => require(principal, Permission::UsersDelete),
        UserAction::Deactivate
        | UserAction::Reactivate
        | UserAction::ResendInvitation
        | UserAction::ResetTwoFactor
        | UserAction::Unlock => require(principal, Permission::UsersWrite),
        UserAction::EndSessions => require(principal, Permission::SessionsManage),
        UserAction::ResetPassword => {
            require(principal, Permission::UsersWrite)?;
            // The Dialer page: resetting a Dialer user's password needs tenant superuser access.
            let superuser = actor.is_some_and(User::is_tenant_superuser);
            if target.dialer_profile.is_some() && !superuser {
                return Err(denied(
                    "TENANT_SUPERUSER_REQUIRED",
                    "resetting a Dialer user's password needs tenant superuser access",
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::model::{
        DialerProfile, Email, PersonName, SessionId, TenantId, UserId, UserStatus, Username,
        builtin_role, effective_permissions,
    };

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Who {
        Owner,
        Admin,
        TechConfig,
        Reports,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Whom {
        TheOwner,
        AnotherAdmin,
        PlainUser,
        DialerUser,
        Itself,
    }

    fn principal(who: Who, user_id: UserId, tenant_id: TenantId) -> Principal {
        let roles: Vec<&str> = match who {
            Who::Owner => vec![],
            Who::Admin => vec!["ADMIN"],
            Who::TechConfig => vec!["TECH_CONFIG"],
            Who::Reports => vec!["REPORTS"],
        };
        let defs: Vec<_> = roles.iter().filter_map(|key| builtin_role(key)).collect();
        Principal {
            tenant_id,
            user_id,
            session_id: SessionId::new(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            permissions: effective_permissions(&defs, who == Who::Owner),
            is_owner: who == Who::Owner,
            password_change_required: false,
            two_factor_enrollment_required: false,
            issued_at: Utc::now(),
            expires_at: Utc::now(),
            service_account: false,
        }
    }

    fn user(id: UserId, tenant_id: TenantId, is_owner: bool, is_admin: bool, dialer: bool) -> User {
        User {
            id,
            tenant_id,
            email: Email::parse("email", "someone@acme.test").unwrap(),
            email_verified: true,
            pending_email: None,
            username: Username::parse("username", "someone").unwrap(),
            first_name: PersonName::parse("first_name", "Some").unwrap(),
            last_name: PersonName::parse("last_name", "One").unwrap(),
            status: UserStatus::Active,
            roles: Vec::new(),
            is_admin,
            tags: Vec::new(),
            memberships: Vec::new(),
            is_owner,
            password_change_required: false,
            dialer_profile: dialer.then(DialerProfile::default),
            caldav_token_set: false,
            pbx_password_set: false,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            last_login_at: None,
        }
    }

    /// The rules of the product pages (seeds 000 and 002), one row per case: who acts, on whom,
    /// what, and the refusal's reason (`None`: allowed).
    const RULES: &[(Who, Whom, UserAction, Option<&str>)] = {
        use UserAction::*;
        use Who::*;
        use Whom::*;
        &[
            // The owner does anything to anyone, but never deletes or deactivates themself.
            (Owner, AnotherAdmin, Delete, None),
            (Owner, PlainUser, Edit(EditScope::Superuser), None),
            (Owner, DialerUser, ResetPassword, None),
            (Owner, Itself, Delete, Some("SELF")),
            (Owner, Itself, Deactivate, Some("SELF")),
            // Admins manage plain users, not the owner and not other admins.
            (Admin, PlainUser, Delete, None),
            (Admin, PlainUser, Edit(EditScope::Account), None),
            (Admin, PlainUser, Edit(EditScope::Roles), None),
            (Admin, PlainUser, EndSessions, None),
            (
                Admin,
                TheOwner,
                Edit(EditScope::OwnProfile),
                Some("USER_IS_OWNER"),
            ),
            (Admin, TheOwner, EndSessions, Some("USER_IS_OWNER")),
            (Admin, AnotherAdmin, Deactivate, Some("USER_IS_ADMIN")),
            (Admin, AnotherAdmin, EndSessions, Some("USER_IS_ADMIN")),
            (Admin, Itself, Delete, Some("SELF")),
            // Tenant superuser access carries admin powers: only the owner grants it.
            (
                Admin,
                PlainUser,
                Edit(EditScope::Superuser),
                Some("OWNER_ONLY"),
            ),
            (
                Admin,
                Itself,
                Edit(EditScope::Superuser),
                Some("OWNER_ONLY"),
            ),
            // Resetting a Dialer user's password needs tenant superuser access.
            (
                Admin,
                DialerUser,
                ResetPassword,
                Some("TENANT_SUPERUSER_REQUIRED"),
            ),
            (Admin, PlainUser, ResetPassword, None),
            // Tech. Configuration changes SIP and caller-ID settings, nothing else.
            (TechConfig, PlainUser, Edit(EditScope::Telephony), None),
            (
                TechConfig,
                PlainUser,
                Edit(EditScope::Account),
                Some("MISSING_PERMISSION"),
            ),
            (TechConfig, PlainUser, Delete, Some("MISSING_PERMISSION")),
            // Everyone edits their own profile; other roles have no say over others.
            (Reports, Itself, Edit(EditScope::OwnProfile), None),
            (
                Reports,
                PlainUser,
                Edit(EditScope::OwnProfile),
                Some("MISSING_PERMISSION"),
            ),
            (Reports, PlainUser, EndSessions, Some("MISSING_PERMISSION")),
        ]
    };

    fn reason(result: Result<()>) -> Option<String> {
        match result {
            Ok(()) => None,
            Err(Error::PermissionDenied { reason, .. }) => Some(reason.to_owned()),
            Err(other) => Some(format!("{other:?}")),
        }
    }

    #[test]
    fn the_rules_of_the_product_pages_hold() {
        let tenant = TenantId::new();
        let mut failures = Vec::new();
        for &(who, whom, action, expected) in RULES {
            let actor_id = UserId::new();
            let actor = principal(who, actor_id, tenant);
            let actor_row = user(
                actor_id,
                tenant,
                who == Who::Owner,
                who == Who::Admin,
                false,
            );
            let target = match whom {
                Whom::TheOwner => user(UserId::new(), tenant, true, false, false),
                Whom::AnotherAdmin => user(UserId::new(), tenant, false, true, false),
                Whom::PlainUser => user(UserId::new(), tenant, false, false, false),
                Whom::DialerUser => user(UserId::new(), tenant, false, false, true),
                Whom::Itself => actor_row.clone(),
            };
            let got = reason(authorize_on_user(&actor, action, &target, Some(&actor_row)));
            if got.as_deref() != expected {
                failures.push(format!(
                    "{who:?} -> {whom:?} {action:?}: {got:?}, expected {expected:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn account_level_rules_hold() {
        let tenant = TenantId::new();
        let owner = principal(Who::Owner, UserId::new(), tenant);
        let admin = principal(Who::Admin, UserId::new(), tenant);
        let tech = principal(Who::TechConfig, UserId::new(), tenant);
        let reports = principal(Who::Reports, UserId::new(), tenant);
        // Reading other users: a permission that reads or edits them.
        for (who, allowed) in [
            (&owner, true),
            (&admin, true),
            (&tech, true),
            (&reports, false),
        ] {
            assert_eq!(
                authorize(who, Action::ReadUsers).is_ok(),
                allowed,
                "{:?}",
                who.roles
            );
        }
        // Owner-only acts.
        for action in [Action::TransferOwnership, Action::ChangeSecuritySettings] {
            assert!(authorize(&owner, action).is_ok());
            assert_eq!(
                reason(authorize(&admin, action)).as_deref(),
                Some("OWNER_ONLY")
            );
        }
        assert!(authorize_superuser_change(&admin).is_err());
        assert!(authorize_admin_grade_role(&admin, "creates").is_err());
        assert!(authorize_admin_grade_role(&owner, "creates").is_ok());
        // Admin and admin-grade roles are the owner's to grant.
        let admin_role = vec!["ADMIN".to_owned()];
        assert!(authorize_role_change(&admin, &admin_role, &[], false).is_err());
        assert!(authorize_role_change(&admin, &["LEAD".to_owned()], &[], true).is_err());
        assert!(authorize_role_change(&admin, &["REPORTS".to_owned()], &[], false).is_ok());
        assert!(authorize_role_change(&owner, &admin_role, &[], true).is_ok());
        assert!(authorize_role_change(&tech, &["REPORTS".to_owned()], &[], false).is_err());
        // A pending password change lets through only reading oneself, the change and logout.
        let mut must_change = reports.clone();
        must_change.password_change_required = true;
        assert!(authorize(&must_change, Action::ReadSelf).is_ok());
        assert!(authorize(&must_change, Action::ChangeOwnPassword).is_ok());
        assert!(authorize(&must_change, Action::EndOwnSession).is_ok());
        for action in [
            Action::ReadRoles,
            Action::ManageOwnSessions,
            Action::ManageOwnTwoFactor,
        ] {
            assert_eq!(
                reason(authorize(&must_change, action)).as_deref(),
                Some(
                    "FailedPrecondition { reason: \"PASSWORD_CHANGE_REQUIRED\", message: \"choose a new password (ChangePassword) before doing anything else\" }"
                )
            );
        }
    }

    #[test]
    fn mass_actions_pass_over_the_owner_themself_and_other_admins() {
        let tenant = TenantId::new();
        let owner = principal(Who::Owner, UserId::new(), tenant);
        let admin = principal(Who::Admin, UserId::new(), tenant);
        let target = |is_owner, is_admin, is_self| MassTarget {
            is_owner,
            is_admin,
            is_self,
        };
        let reason_of = |p: &Principal, t, ends| mass_action_protection(p, t, ends).map(|r| r.0);
        assert_eq!(
            reason_of(&admin, target(true, false, false), false),
            Some("USER_IS_OWNER")
        );
        assert_eq!(
            reason_of(&owner, target(true, false, true), false),
            Some("USER_IS_OWNER")
        );
        assert_eq!(
            reason_of(&admin, target(false, true, true), true),
            Some("SELF")
        );
        assert_eq!(reason_of(&admin, target(false, true, true), false), None);
        assert_eq!(
            reason_of(&admin, target(false, true, false), false),
            Some("USER_IS_ADMIN")
        );
        assert_eq!(reason_of(&owner, target(false, true, false), true), None);
        assert_eq!(reason_of(&admin, target(false, false, false), true), None);
    }
}
