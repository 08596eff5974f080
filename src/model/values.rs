//! Newtypes that parse request input once, at the edge, so the rest of the code can trust them.

use std::fmt;

use super::{Error, Result, Secret};

/// An email address, trimmed and lower-cased (unique per account in that form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Parses the address sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let text = text.trim().to_lowercase();
        let invalid = |why: &str| Err(Error::invalid(field, why));
        if text.is_empty() {
            return invalid("is required");
        }
        if text.len() > 254 {
            return invalid("must be at most 254 characters");
        }
        let Some((local, domain)) = text.split_once('@') else {
            return invalid("must be an email address like name@example.com");
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        let labels_ok = domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
        let dots_ok = !local.starts_with('.') && !local.ends_with('.') && !local.contains("..");
        let local_ok = labels_ok
            && dots_ok
            && !local.is_empty()
            && local.len() <= 64
            && !local
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"@".contains(c));
        if !domain_ok || !local_ok {
            return invalid("must be an email address like name@example.com");
        }
        Ok(Self(text))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password that satisfies the policy of the product pages: 8 to 128 characters with at least
/// one upper-case letter, one lower-case letter and one digit.
#[derive(Debug, Clone)]
pub struct Password(Secret);

impl Password {
    /// Shortest accepted password.
    pub const MIN_CHARS: usize = 8;
    /// Longest accepted password (bounds the hashing work an attacker can ask for).
    pub const MAX_CHARS: usize = 128;

    /// Checks `text` (sent in `field`) against the policy.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let chars = text.chars().count();
        let mut missing = Vec::new();
        if chars < Self::MIN_CHARS {
            missing.push(format!("at least {} characters", Self::MIN_CHARS));
        }
        if chars > Self::MAX_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if !text.chars().any(char::is_uppercase) {
            missing.push("an upper-case letter".into());
        }
        if !text.chars().any(char::is_lowercase) {
            missing.push("a lower-case letter".into());
        }
        if !text.chars().any(|c| c.is_ascii_digit()) {
            missing.push("a digit".into());
        }
        if missing.is_empty() {
            Ok(Self(Secret::new(text)))
        } else {
            Err(Error::invalid(
                field,
                format!("must contain {}", missing.join(", ")),
            ))
        }
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

fn bounded_text(field: &str, text: &str, max: usize, required: bool) -> Result<String> {
    let text = text.trim();
    if required && text.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if text.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(text.to_owned())
}

/// A first or last name: trimmed, at most 100 characters, may be empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersonName(String);

impl PersonName {
    /// Parses the name sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        bounded_text(field, text, 100, false).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The display name of an account: 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountName(String);

impl AccountName {
    /// Parses the name sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        bounded_text(field, text, 200, true).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A login name: 1 to 254 characters of letters, digits and `. _ - @ +`, stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Parses the username sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let text = text.trim().to_lowercase();
        if text.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if text.len() > 254 {
            return Err(Error::invalid(field, "must be at most 254 characters"));
        }
        if !text
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@+".contains(c))
        {
            return Err(Error::invalid(
                field,
                "may contain only letters, digits and . _ - @ +",
            ));
        }
        Ok(Self(text))
    }

    /// The username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a user types at login: an email or a username (both compared lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login(String);

impl Login {
    /// Parses the login sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let text = text.trim().to_lowercase();
        if text.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if text.len() > 254 {
            return Err(Error::invalid(field, "must be at most 254 characters"));
        }
        Ok(Self(text))
    }

    /// The normalised login.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free labels of a user: trimmed, 1 to 64 printable characters each, at most 100, sorted and
/// without duplicates. The API's one rule for tags, wherever they come in.
pub fn parse_tags(field: &str, tags: &[String]) -> Result<Vec<String>> {
    super::bounded(field, tags, super::limits::TAGS)?;
    let mut clean: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim();
        if tag.is_empty() || tag.chars().count() > 64 || tag.chars().any(char::is_control) {
            return Err(Error::invalid(
                field,
                format!("{tag:?} is not a tag (1 to 64 printable characters)"),
            ));
        }
        clean.push(tag.to_owned());
    }
    clean.sort();
    clean.dedup();
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy_names_every_missing_class() {
        let err = Password::parse("password", "short")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 8 characters"), "{err}");
        assert!(err.contains("upper-case"), "{err}");
        assert!(err.contains("digit"), "{err}");
        assert!(Password::parse("password", "Str0ngPass").is_ok());
        assert!(Password::parse("password", &"Aa1".repeat(50)).is_err());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("email", " Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@ex..com",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad} accepted");
        }
    }
}
