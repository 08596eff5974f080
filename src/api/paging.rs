//! The one paging rule of every listing (users, teams, members, sessions, activity): a page size
//! of 0 means 50, 1 to 1000 is taken as asked, anything else is INVALID_ARGUMENT; and one opaque
//! page token format, base64url of `{"k": listing, "v": sort value, "i": last id, "f": query
//! fingerprint}`, which a listing accepts only from itself and for the same query.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Error, Result};

/// Default page size of the listings.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size of the listings.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// Where the next page starts: after the row with this sort value (empty when the listing is
/// ordered by id alone) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    pub value: String,
    pub id: uuid::Uuid,
}

#[derive(Serialize, Deserialize)]
struct Token {
    k: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    v: String,
    i: uuid::Uuid,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    f: String,
}

/// The page token of the listing `kind` that continues after `after`, for the query whose
/// fingerprint is `query` (empty when the listing has no filters to tell apart).
pub fn token(kind: &str, after: After, query: &str) -> String {
    let token = Token {
        k: kind.to_owned(),
        v: after.value,
        i: after.id,
        f: query.to_owned(),
    };
    // A struct of strings and a UUID always serializes.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// The page token of an id-ordered listing `kind` that continues after `id`.
pub fn encode(kind: &str, id: uuid::Uuid) -> String {
    token(
        kind,
        After {
            value: String::new(),
            id,
        },
        "",
    )
}

/// Reads a page token sent in `field` to the listing `kind` for the query `query`; empty means
/// the first page.
pub fn after(field: &str, kind: &str, query: &str, token: &str) -> Result<Option<After>> {
    let token = token.trim();
    if token.is_empty() {
        return Ok(None);
    }
    let decoded: Token = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|decoded: &Token| decoded.k == kind)
        .ok_or_else(|| Error::invalid(field, "is not a page token of this listing"))?;
    if decoded.f != query {
        return Err(Error::invalid(
            field,
            "belongs to a request with other filters or order",
        ));
    }
    Ok(Some(After {
        value: decoded.v,
        id: decoded.i,
    }))
}

/// Reads a page token of an id-ordered listing `kind`.
pub fn decode(field: &str, kind: &str, token: &str) -> Result<Option<uuid::Uuid>> {
    Ok(after(field, kind, "", token)?.map(|after| after.id))
}

/// The page size asked for in `field`.
pub fn page_size(field: &str, requested: i32) -> Result<u64> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size @ 1.. if size as u64 <= MAX_PAGE_SIZE => Ok(size as u64),
        _ => Err(Error::invalid(
            field,
            format!("must be between 1 and {MAX_PAGE_SIZE} ({DEFAULT_PAGE_SIZE} when 0)"),
        )),
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
    fn page_tokens_round_trip_and_belong_to_their_listing_and_query() {
        let id = uuid::Uuid::now_v7();
        let token = encode("session", id);
        assert_eq!(decode("page_token", "session", &token).unwrap(), Some(id));
        assert!(decode("page_token", "activity", &token).is_err());
        assert!(decode("page_token", "session", "garbage!").is_err());
        assert_eq!(decode("page_token", "session", "").unwrap(), None);
        let keyed = super::token(
            "users",
            After {
                value: "ann@acme.test".into(),
                id,
            },
            "q1",
        );
        let read = after("page_token", "users", "q1", &keyed).unwrap().unwrap();
        assert_eq!((read.value.as_str(), read.id), ("ann@acme.test", id));
        assert!(after("page_token", "users", "q2", &keyed).is_err());
    }

    #[test]
    fn one_page_size_rule() {
        assert_eq!(page_size("page_size", 0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size("page_size", 1000).unwrap(), 1000);
        assert!(page_size("page_size", 1001).is_err());
        assert!(page_size("page_size", -1).is_err());
    }
}
