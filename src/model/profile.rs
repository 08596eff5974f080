//! The Dialer profile of a user, typed and validated.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Email, Error, Result, Secret};

/// An IANA time zone name, e.g. `Europe/Berlin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZone(String);

impl TimeZone {
    /// Parses the zone sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let text = text.trim();
        text.parse::<chrono_tz::Tz>()
            .map(|tz| Self(tz.name().to_owned()))
            .map_err(|_| {
                Error::invalid(
                    field,
                    format!("{text:?} is not an IANA time zone name (e.g. Europe/Berlin)"),
                )
            })
    }

    /// The zone name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag, e.g. `en-US`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Language(String);

impl Language {
    /// Parses the tag sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let text = text.trim();
        language_tags::LanguageTag::parse(text)
            .ok()
            .filter(|tag| tag.is_valid())
            .map(|tag| Self(tag.to_string()))
            .ok_or_else(|| {
                Error::invalid(
                    field,
                    format!("{text:?} is not a BCP 47 language tag (e.g. en-US)"),
                )
            })
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses the number sent in `field`; spaces, dashes and parentheses are dropped.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let compact: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        let digits = compact.strip_prefix('+').unwrap_or("");
        let ok = (8..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(compact))
        } else {
            Err(Error::invalid(
                field,
                "must be an E.164 number: + and 8 to 15 digits, e.g. +14155550123",
            ))
        }
    }

    /// The number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SipUri(String);

impl SipUri {
    /// Parses the URI sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let text = text.trim();
        let rest = text
            .strip_prefix("sip:")
            .or_else(|| text.strip_prefix("sips:"))
            .ok_or_else(|| {
                Error::invalid(
                    field,
                    "must be a sip: or sips: URI, e.g. sip:agent7@pbx.example.com",
                )
            })?;
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let host = host.split([';', '?']).next().unwrap_or("");
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !host_ok || text.len() > 512 || text.chars().any(char::is_whitespace) {
            return Err(Error::invalid(
                field,
                "must be a sip: or sips: URI with a host, e.g. sip:agent7@pbx.example.com",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller-ID name shown to called parties: at most 64 printable characters, trimmed; empty
/// is none. The API and the CSV import both check it here.
pub fn caller_id_name(field: &str, text: &str) -> Result<Option<String>> {
    let text = text.trim();
    if text.chars().count() > 64 || text.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be at most 64 printable characters",
        ));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// The username of a PBX account: at most 128 printable characters, trimmed; empty is none.
pub fn pbx_username(field: &str, text: &str) -> Result<Option<String>> {
    let text = text.trim();
    if text.len() > 128 || text.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be at most 128 printable characters",
        ));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// An extension or virtual extension: 1 to 10 digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Extension(String);

impl Extension {
    /// Parses the extension sent in `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let text = text.trim();
        if (1..=10).contains(&text.len()) && text.chars().all(|c| c.is_ascii_digit()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(Error::invalid(field, "must be 1 to 10 digits"))
        }
    }

    /// The extension.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a network in CIDR notation (a bare address is a single-host network).
pub fn parse_network(field: &str, text: &str) -> Result<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            Error::invalid(
                field,
                format!("{text:?} is not a network in CIDR notation (e.g. 203.0.113.0/24)"),
            )
        })
}

/// How a Dialer user works with auto-dialing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AutoDial {
    #[default]
    Off,
    Optional,
    Always,
}

/// How a PBX extension is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PbxExtension {
    Number(Extension),
    Dynamic,
}

/// SIP connection of a Dialer user.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SipSettings {
    /// Not configured yet.
    #[default]
    None,
    CustomUri(SipUri),
    WebRtc,
    Pbx {
        username: Option<String>,
        extension: Option<PbxExtension>,
    },
}

/// The Dialer settings of a user. Secrets (CalDAV token, PBX password) are kept apart.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DialerProfile {
    pub oauth_email: Option<Email>,
    pub active: bool,
    pub assign_leads: bool,
    pub extended_ip_acl: bool,
    pub allowed_networks: Vec<IpNet>,
    pub auto_dial: AutoDial,
    pub caller_id_name: Option<String>,
    pub caller_id_number: Option<PhoneNumber>,
    pub virtual_extension: Option<Extension>,
    pub timezone: Option<TimeZone>,
    pub language: Option<Language>,
    pub tenant_superuser: bool,
    pub sip: SipSettings,
}

impl DialerProfile {
    /// Whether `address` may be used by this user (always, unless the extended IP ACL is on).
    pub fn allows(&self, address: std::net::IpAddr) -> bool {
        !self.extended_ip_acl
            || self
                .allowed_networks
                .iter()
                .any(|net| net.contains(&address))
    }
}

/// Write-only secrets of a Dialer profile. `None` keeps what is stored.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProfileSecrets {
    pub caldav_token: Option<Secret>,
    pub pbx_password: Option<Secret>,
}

impl fmt::Debug for ProfileSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileSecrets")
            .field("caldav_token", &self.caldav_token.as_ref().map(|_| "***"))
            .field("pbx_password", &self.pbx_password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// [`ProfileSecrets`] as stored: each one sealed (see `domain::sealing`). `None` keeps what is
/// stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealedSecrets {
    pub caldav_token: Option<String>,
    pub pbx_password: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_values_parse_or_name_the_field() {
        assert_eq!(
            TimeZone::parse("tz", "Europe/Berlin").unwrap().as_str(),
            "Europe/Berlin"
        );
        assert!(TimeZone::parse("tz", "Mars/Olympus").is_err());
        assert!(Language::parse("lang", "en-US").is_ok());
        assert!(Language::parse("lang", "english please").is_err());
        assert_eq!(
            PhoneNumber::parse("n", "+1 (415) 555-0123")
                .unwrap()
                .as_str(),
            "+14155550123"
        );
        assert!(PhoneNumber::parse("n", "0155").is_err());
        assert!(SipUri::parse("u", "sip:agent7@pbx.example.com").is_ok());
        assert!(SipUri::parse("u", "http://example.com").is_err());
        assert_eq!(
            parse_network("n", "10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_network("n", "10.0.0.0/33").is_err());
        let err = Extension::parse("dialer_profile.virtual_extension", "12a").unwrap_err();
        assert!(err.to_string().contains("dialer_profile.virtual_extension"));
    }

    #[test]
    fn the_ip_acl_applies_only_when_on() {
        let mut profile = DialerProfile {
            allowed_networks: vec![parse_network("n", "203.0.113.0/24").unwrap()],
            ..Default::default()
        };
        let inside = "203.0.113.9".parse().unwrap();
        let outside = "198.51.100.1".parse().unwrap();
        assert!(profile.allows(outside));
        profile.extended_ip_acl = true;
        assert!(profile.allows(inside));
        assert!(!profile.allows(outside));
    }
}
