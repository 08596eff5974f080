//! Opaque page tokens of the keyset listings of this crate's session and activity services, and
//! page sizes.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};

use crate::model::{Error, Result};

/// Default page size of the listings.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size of the listings.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// The page token that continues after the row `id` of a listing of `kind`.
pub fn encode(kind: &str, id: uuid::Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{id}"))
}

/// Reads a page token of a listing of `kind` sent in `field`; empty means the first page.
pub fn decode(field: &str, kind: &str, token: &str) -> Result<Option<uuid::Uuid>> {
    let token = token.trim();
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
        })
        .map(Some)
        .ok_or_else(|| Error::invalid(field, "is not a page token of this listing"))
}

/// The page size asked for: 0 means the default, more than the maximum is the maximum.
pub fn page_size(field: &str, requested: i32) -> Result<u64> {
    match u64::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
        Err(_) => Err(Error::invalid(field, "must not be negative")),
    }
}

/// A protobuf timestamp as an instant.
pub fn instant(field: &str, timestamp: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(timestamp.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_belong_to_their_listing() {
        let id = uuid::Uuid::now_v7();
        let token = encode("session", id);
        assert_eq!(decode("page_token", "session", &token).unwrap(), Some(id));
        assert!(decode("page_token", "activity", &token).is_err());
        assert!(decode("page_token", "session", "garbage!").is_err());
        assert_eq!(decode("page_token", "session", "").unwrap(), None);
        assert_eq!(page_size("page_size", 0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size("page_size", 5000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size("page_size", -1).is_err());
    }
}
