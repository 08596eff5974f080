use chrono::{DateTime, Utc};

use super::{AccountName, Error, Result, TenantId, UserId};

/// An account: owns users, roles and teams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: String,
    pub name: AccountName,
    pub owner_user_id: Option<UserId>,
    /// Every user must enrol in two-factor authentication.
    pub require_two_factor: bool,
    pub created_at: DateTime<Utc>,
}

/// How a login names its account: by id or by slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRef {
    Id(TenantId),
    Slug(String),
}

impl TenantRef {
    /// Parses the account reference sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::invalid(field, "is required (account slug or id)"));
        }
        match uuid::Uuid::parse_str(text) {
            Ok(id) => Ok(Self::Id(TenantId(id))),
            Err(_) => Ok(Self::Slug(text.to_lowercase())),
        }
    }
}

/// Derives a URL-safe slug from an account name: lower-case ASCII letters and digits joined by
/// single dashes, at most 48 characters; "account" when nothing usable is left.
pub fn slug_from_name(name: &str) -> String {
    let mut slug = String::new();
    // Transliterated first, so that "Müller" keeps its u instead of losing the letter.
    for c in deunicode::deunicode(name)
        .chars()
        .flat_map(char::to_lowercase)
    {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 48 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        "account".to_owned()
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(
            slug_from_name("  Acme Call-Center, Ltd.  "),
            "acme-call-center-ltd"
        );
        assert_eq!(slug_from_name("Müller & Søn"), "muller-son");
        assert_eq!(slug_from_name("Télécom Ωmega"), "telecom-omega");
        assert_eq!(slug_from_name("北京"), "bei-jing");
        assert_eq!(slug_from_name("!!!"), "account");
    }
}
