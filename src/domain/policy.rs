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
    match action {
        Action::ReadSelf
        | Action::ChangeOwnPassword
        | Action::EndOwnSession
        | Action::ManageOwnTwoFactor
        | Action::ManageOwnSessions
        | Action::ReadRoles => Ok(()),
        Action::ManageSessions => require(principal, Permission::SessionsManage),
        Action::ReadActivity => require(principal, Permission::ActivityRead),
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

/// Whether granting or revoking `roles` needs the owner (Admin is the owner's to give).
pub fn authorize_role_change(
    principal: &Principal,
    added: &[String],
    removed: &[String],
) -> Result<()> {
    let admin = BuiltinRole::Admin.key();
    let touches_admin = added.iter().chain(removed).any(|role| role == admin);
    if touches_admin && !principal.is_owner {
        return Err(denied(
            "ADMIN_ROLE_OWNER_ONLY",
            "only the account owner grants or revokes the Admin role",
        ));
    }
    if !added.is_empty() || !removed.is_empty() {
        require(principal, Permission::RolesAssign)?;
    }
    Ok(())
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
