//! The permission catalogue and the built-in account roles of the Portal page.

/// A permission key, e.g. `users.write`. Other services read these through `ValidateToken`.
pub type Permission = &'static str;

/// Every permission that exists, with what it allows. The owner holds all of them.
pub const ALL_PERMISSIONS: &[(Permission, &str)] = &[
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
    ("inbox.access", "use the Inbox section"),
];

/// Permissions every user holds, whatever their roles.
const EVERYONE: &[Permission] = &["support.contact"];

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
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            // Admin combines the privileges of all the other roles and manages users.
            Self::Admin => &[
                "users.read",
                "users.write",
                "users.delete",
                "roles.assign",
                "sessions.manage",
                "activity.read",
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

/// Parses role keys sent in `field`: known keys, upper-cased, sorted, without duplicates.
pub fn parse_roles(field: &str, keys: &[String]) -> super::Result<Vec<String>> {
    let mut roles = Vec::with_capacity(keys.len());
    for key in keys {
        let key = key.trim();
        match BuiltinRole::from_key(key) {
            Some(role) => roles.push(role.key().to_owned()),
            None => {
                return Err(super::Error::invalid(
                    field,
                    format!(
                        "unknown role {key:?} (known: ADMIN, REPORTS, TECH_CONFIG, FINANCE, ORDERS)"
                    ),
                ));
            }
        }
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

/// The effective permissions of a user with `roles`, sorted and without duplicates.
pub fn permissions_of(roles: &[String], is_owner: bool) -> Vec<Permission> {
    let mut permissions: Vec<Permission> = if is_owner {
        ALL_PERMISSIONS.iter().map(|(key, _)| *key).collect()
    } else {
        roles
            .iter()
            .filter_map(|key| BuiltinRole::from_key(key))
            .flat_map(|role| role.permissions().iter().copied())
            .chain(EVERYONE.iter().copied())
            .collect()
    };
    permissions.sort_unstable();
    permissions.dedup();
    permissions
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_role_permission_is_in_the_catalogue() {
        for role in BuiltinRole::ALL {
            for permission in role.permissions() {
                assert!(ALL_PERMISSIONS.iter().any(|(key, _)| key == permission));
            }
        }
    }

    #[test]
    fn owner_holds_everything_and_everyone_may_contact_support() {
        assert_eq!(permissions_of(&[], true).len(), ALL_PERMISSIONS.len());
        assert_eq!(permissions_of(&[], false), vec!["support.contact"]);
    }
}
