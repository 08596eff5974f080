//! The permission catalogue and the built-in account roles of the Portal page.

/// A permission key, e.g. `users.write`: the string form, for tokens, protos, role definitions
/// and the README. Other services read these through `ValidateToken`.
pub type PermissionKey = &'static str;

/// A permission as the code decides on it ([`Permission::key`] is its string form at the edges).
/// The variants follow [`ALL_PERMISSIONS`], position for position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    UsersRead,
    UsersWrite,
    UsersDelete,
    RolesAssign,
    RolesAssignAdmin,
    OwnershipTransfer,
    SessionsManage,
    ActivityRead,
    ReportsRun,
    CdrReportsRun,
    SipSettingsWrite,
    CallerIdWrite,
    SpeechToTextAccess,
    SmsAccess,
    LookupAccess,
    BillingAccess,
    ProfileSettingsWrite,
    SupportContact,
    TeamsRead,
    TeamsWrite,
    RolesManage,
    InboxAccess,
    InboxManage,
    EventsRead,
    ServiceAccountsManage,
    WebhooksManage,
}

impl Permission {
    /// Every permission, in catalogue order.
    pub const ALL: [Permission; 26] = [
        Self::UsersRead,
        Self::UsersWrite,
        Self::UsersDelete,
        Self::RolesAssign,
        Self::RolesAssignAdmin,
        Self::OwnershipTransfer,
        Self::SessionsManage,
        Self::ActivityRead,
        Self::ReportsRun,
        Self::CdrReportsRun,
        Self::SipSettingsWrite,
        Self::CallerIdWrite,
        Self::SpeechToTextAccess,
        Self::SmsAccess,
        Self::LookupAccess,
        Self::BillingAccess,
        Self::ProfileSettingsWrite,
        Self::SupportContact,
        Self::TeamsRead,
        Self::TeamsWrite,
        Self::RolesManage,
        Self::InboxAccess,
        Self::InboxManage,
        Self::EventsRead,
        Self::ServiceAccountsManage,
        Self::WebhooksManage,
    ];

    /// The string form, e.g. `users.read`.
    pub fn key(self) -> &'static str {
        ALL_PERMISSIONS[self as usize].0
    }

    /// The permission a key names.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|permission| permission.key() == key)
    }
}

/// Every permission that exists, with what it allows. The owner holds all of them.
///
/// Access tokens carry permissions as positions in this list: add new ones at the end only.
pub const ALL_PERMISSIONS: &[(PermissionKey, &str)] = &[
    ("users.read", "view the account's users"),
    (
        "users.write",
        "add and edit users (not the owner, not admins)",
    ),
    ("users.delete", "delete users (not the owner, not admins)"),
    ("roles.assign", "assign roles other than Admin"),
    (
        "roles.assign_admin",
        "grant or revoke the Admin role (owner only)",
    ),
    (
        "ownership.transfer",
        "pass account ownership to another user (owner only)",
    ),
    ("sessions.manage", "view and end other users' sessions"),
    ("activity.read", "view the account's activity trail"),
    ("reports.run", "run reports"),
    ("cdr_reports.run", "run CDR reports"),
    ("sip_settings.write", "change users' SIP account settings"),
    ("caller_id.write", "change users' caller ID settings"),
    ("speech_to_text.access", "use the Speech-to-Text section"),
    ("sms.access", "use the SMS section"),
    ("lookup.access", "use the LookUp section"),
    ("billing.access", "use the Billing section"),
    (
        "profile_settings.write",
        "change the account's profile settings",
    ),
    (
        "support.contact",
        "contact support and see the request history",
    ),
    (
        "teams.read",
        "view teams, departments, desks and their members",
    ),
    ("teams.write", "manage teams and their members"),
    ("roles.manage", "create, rename and delete custom roles"),
    ("inbox.access", "use the Inbox section"),
    (
        "inbox.manage",
        "manage the Inbox: conversations of every team member",
    ),
    ("events.read", "read and follow the account's event feed"),
    (
        "service_accounts.manage",
        "manage service accounts and their API keys (not admin-grade ones)",
    ),
    (
        "webhooks.manage",
        "manage webhook endpoints, read their delivery log and redeliver",
    ),
];

/// Permissions that make a role admin-grade: only the owner creates, changes or assigns a role
/// holding any of them, and admins cannot change the users who hold one.
pub const ADMIN_GRADE_PERMISSIONS: &[PermissionKey] = &[
    "users.write",
    "users.delete",
    "roles.assign",
    "roles.manage",
    "sessions.manage",
    "service_accounts.manage",
];

/// Where a role applies. A user holds any number of account roles, and at most one Platform role
/// and one Inbox role (the SMS page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleScope {
    Account,
    Platform,
    Inbox,
}

impl RoleScope {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "ACCOUNT",
            Self::Platform => "PLATFORM",
            Self::Inbox => "INBOX",
        }
    }

    /// Reads a stored name.
    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "ACCOUNT" => Some(Self::Account),
            "PLATFORM" => Some(Self::Platform),
            "INBOX" => Some(Self::Inbox),
            _ => None,
        }
    }
}

/// A role: built in, or defined by an account from the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDef {
    /// Upper-case key, e.g. `ADMIN` or `SUPPORT_LEAD`.
    pub key: String,
    pub name: String,
    pub scope: RoleScope,
    /// Sorted permission keys.
    pub permissions: Vec<String>,
    pub builtin: bool,
}

impl RoleDef {
    /// Whether holding the role is as good as being an admin.
    pub fn is_admin_grade(&self) -> bool {
        self.permissions
            .iter()
            .any(|p| ADMIN_GRADE_PERMISSIONS.contains(&p.as_str()))
    }
}

/// Built-in Platform and Inbox roles of the SMS page: (key, name, scope, permissions).
const SCOPED_BUILTINS: &[(&str, &str, RoleScope, &[PermissionKey])] = &[
    (
        "PLATFORM_ADMIN",
        "Platform admin",
        RoleScope::Platform,
        &[
            "sms.access",
            "lookup.access",
            "teams.read",
            "teams.write",
            "users.read",
        ],
    ),
    (
        "PLATFORM_MEMBER",
        "Platform member",
        RoleScope::Platform,
        &["sms.access", "teams.read"],
    ),
    (
        "INBOX_MANAGER",
        "Inbox manager",
        RoleScope::Inbox,
        &["inbox.access", "inbox.manage"],
    ),
    (
        "INBOX_AGENT",
        "Inbox agent",
        RoleScope::Inbox,
        &["inbox.access"],
    ),
];

/// Every built-in role.
pub fn builtin_roles() -> Vec<RoleDef> {
    let account = BuiltinRole::ALL.into_iter().map(|role| RoleDef {
        key: role.key().to_owned(),
        name: role.name().to_owned(),
        scope: RoleScope::Account,
        permissions: role.permissions().iter().map(|p| (*p).to_owned()).collect(),
        builtin: true,
    });
    let scoped = SCOPED_BUILTINS
        .iter()
        .map(|(key, name, scope, permissions)| RoleDef {
            key: (*key).to_owned(),
            name: (*name).to_owned(),
            scope: *scope,
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            builtin: true,
        });
    let mut roles: Vec<RoleDef> = account.chain(scoped).collect();
    for role in &mut roles {
        role.permissions.sort();
    }
    roles
}

/// The built-in role with `key`, if any.
pub fn builtin_role(key: &str) -> Option<RoleDef> {
    builtin_roles().into_iter().find(|role| role.key == key)
}

/// Checks the form of a role key (upper-cased): 2 to 64 of `A-Z 0-9 _`, starting with a letter.
pub fn normalize_role_key(field: &str, text: &str) -> super::Result<String> {
    let key = text.trim().to_uppercase();
    let ok = (2..=64).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_uppercase())
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(key)
    } else {
        Err(super::Error::invalid(
            field,
            format!("{text:?} is not a role key (A-Z, 0-9 and _, e.g. SUPPORT_LEAD)"),
        ))
    }
}

/// Normalises a list of role keys: upper-cased, sorted, without duplicates; existence is checked
/// by the domain, which knows the account's custom roles.
pub fn normalize_role_keys(field: &str, keys: &[String]) -> super::Result<Vec<String>> {
    super::error::bounded(field, keys, super::error::limits::ROLES)?;
    let mut roles = keys
        .iter()
        .map(|key| normalize_role_key(field, key))
        .collect::<super::Result<Vec<_>>>()?;
    roles.sort();
    roles.dedup();
    Ok(roles)
}

/// The effective permissions of a holder of `roles` (already resolved), sorted, without duplicates;
/// every user may contact support and the owner holds everything.
pub fn effective_permissions(roles: &[RoleDef], is_owner: bool) -> Vec<String> {
    let mut permissions: Vec<String> = if is_owner {
        ALL_PERMISSIONS
            .iter()
            .map(|(key, _)| (*key).to_owned())
            .collect()
    } else {
        roles
            .iter()
            .flat_map(|role| role.permissions.iter().cloned())
            .chain(EVERYONE.iter().map(|p| (*p).to_owned()))
            .collect()
    };
    permissions.sort_unstable();
    permissions.dedup();
    permissions
}

/// Permissions every user holds, whatever their roles.
const EVERYONE: &[PermissionKey] = &["support.contact"];

/// The built-in account roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    Admin,
    Reports,
    TechConfig,
    Finance,
    Orders,
}

impl BuiltinRole {
    /// All built-in roles.
    pub const ALL: [BuiltinRole; 5] = [
        Self::Admin,
        Self::Reports,
        Self::TechConfig,
        Self::Finance,
        Self::Orders,
    ];

    /// The display name of the Portal page.
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "Admin",
            Self::Reports => "Reports",
            Self::TechConfig => "Tech. Configuration",
            Self::Finance => "Finance",
            Self::Orders => "Orders",
        }
    }

    /// The role key used in the API and the database.
    pub fn key(self) -> &'static str {
        match self {
            Self::Admin => "ADMIN",
            Self::Reports => "REPORTS",
            Self::TechConfig => "TECH_CONFIG",
            Self::Finance => "FINANCE",
            Self::Orders => "ORDERS",
        }
    }

    /// Finds a built-in role by key (case-insensitive).
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|role| role.key().eq_ignore_ascii_case(key))
    }

    /// What the role allows, as the Portal page describes it.
    pub fn permissions(self) -> &'static [PermissionKey] {
        match self {
            // Admin combines the privileges of all the other roles and manages users.
            Self::Admin => &[
                "users.read",
                "users.write",
                "users.delete",
                "roles.assign",
                "sessions.manage",
                "activity.read",
                "events.read",
                "service_accounts.manage",
                "webhooks.manage",
                "reports.run",
                "cdr_reports.run",
                "sip_settings.write",
                "caller_id.write",
                "speech_to_text.access",
                "sms.access",
                "lookup.access",
                "billing.access",
                "profile_settings.write",
                "teams.read",
                "teams.write",
                "inbox.access",
            ],
            Self::Reports => &["reports.run"],
            Self::TechConfig => &[
                "sip_settings.write",
                "caller_id.write",
                "speech_to_text.access",
                "sms.access",
                "lookup.access",
                "cdr_reports.run",
            ],
            Self::Finance => &["billing.access", "profile_settings.write"],
            Self::Orders => &["speech_to_text.access", "sms.access", "lookup.access"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/permissions.md is the catalogue, row for row, so the manual cannot drift from it.
    #[test]
    fn permissions_doc_lists_the_catalogue() {
        let doc = include_str!("../../docs/permissions.md");
        let catalogue = doc
            .split("## The catalogue")
            .nth(1)
            .expect("a catalogue section");
        let rows: Vec<String> = catalogue
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(str::to_owned)
            .collect();
        let expected: Vec<String> = ALL_PERMISSIONS
            .iter()
            .map(|(key, allows)| format!("| `{key}` | {allows} |"))
            .collect();
        assert_eq!(rows, expected);
    }

    #[test]
    fn admin_holds_every_other_builtin_roles_permissions() {
        let admin = BuiltinRole::Admin.permissions();
        for role in BuiltinRole::ALL {
            for permission in role.permissions() {
                assert!(admin.contains(permission), "{permission} of {role:?}");
            }
        }
        assert!(!admin.contains(&"roles.assign_admin"));
    }

    #[test]
    fn the_typed_permissions_follow_the_catalogue() {
        assert_eq!(Permission::ALL.len(), ALL_PERMISSIONS.len());
        for (position, permission) in Permission::ALL.into_iter().enumerate() {
            assert_eq!(permission as usize, position);
            assert_eq!(Permission::from_key(permission.key()), Some(permission));
        }
        assert_eq!(Permission::UsersRead.key(), "users.read");
        assert_eq!(Permission::InboxManage.key(), "inbox.manage");
        assert_eq!(Permission::from_key("future.thing"), None);
    }

    #[test]
    fn every_role_permission_is_in_the_catalogue() {
        for role in BuiltinRole::ALL {
            for permission in role.permissions() {
                assert!(ALL_PERMISSIONS.iter().any(|(key, _)| key == permission));
            }
        }
    }

    #[test]
    fn owner_holds_everything_and_everyone_may_contact_support() {
        assert_eq!(
            effective_permissions(&[], true).len(),
            ALL_PERMISSIONS.len()
        );
        assert_eq!(
            effective_permissions(&[], false),
            vec!["support.contact".to_string()]
        );
    }

    #[test]
    fn scoped_builtins_use_catalogue_permissions_and_admin_is_admin_grade() {
        for role in builtin_roles() {
            for permission in &role.permissions {
                assert!(
                    ALL_PERMISSIONS.iter().any(|(key, _)| key == permission),
                    "{permission}"
                );
            }
            assert_eq!(role.is_admin_grade(), role.key == "ADMIN", "{}", role.key);
        }
        assert!(normalize_role_key("r", "support lead").is_err());
        assert_eq!(
            normalize_role_key("r", "support_lead").unwrap(),
            "SUPPORT_LEAD"
        );
    }
}
