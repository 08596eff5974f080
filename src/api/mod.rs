//! Transport: the gRPC services, proto <-> model conversion, and the one place where errors
//! become statuses.

mod activity;
mod auth;
mod convert;
mod events;
mod limits;
pub mod observe;
pub mod pages;
mod paging;
mod roles;
mod security;
mod service_accounts;
mod sessions;
mod teams;
mod two_factor;
mod users;
mod webhooks;

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;
use tonic::{Code, Request, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::App,
    model::{ClientInfo, Error, FieldViolation, Principal, limits as bounds},
};

pub use activity::ActivityApi;
pub use auth::AuthApi;
pub use events::EventApi;
pub use limits::AttemptLimiter;
pub use roles::RoleApi;
pub use security::SecurityApi;
pub use service_accounts::ServiceAccountApi;
pub use sessions::SessionApi;
pub use teams::TeamApi;
pub use two_factor::TwoFactorApi;
pub use users::{UserApi, default_listing_token_after};
pub use webhooks::WebhookApi;

/// Generated protobuf types and services of `roster.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("roster.v1");

    /// Encoded descriptor set of every roster proto and its imports, `google.api.http` options
    /// included (served by reflection, loaded by the Envoy transcoder).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/roster_descriptor.bin"));
}

/// What every service handler needs.
#[derive(Clone)]
pub struct ApiContext {
    pub app: App,
    /// Peers whose `x-forwarded-for` entries are believed.
    pub trusted_proxies: Arc<Vec<IpNet>>,
    /// Per-address limits on login-type calls.
    pub attempts: Arc<AttemptLimiter>,
}

impl ApiContext {
    /// The verified identity of the caller, from `authorization: Bearer <token>`. Records the
    /// tenant and user on the request's span. A token of a user with the extended IP ACL on is
    /// refused (IP_NOT_ALLOWED) from outside their allowed networks.
    pub async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let token = bearer_token(request.metadata()).ok_or_else(|| {
            Status::from(Error::unauthenticated(
                "MISSING_TOKEN",
                "send authorization: Bearer <access token>",
            ))
        })?;
        let principal = self
            .app
            .authenticate_from(token, self.client_ip(request))
            .await?;
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(principal.tenant_id));
        span.record("user_id", tracing::field::display(principal.user_id));
        Ok(principal)
    }

    /// The client's address: the peer, or the entry a trusted proxy added.
    pub fn client_ip<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        client_address(
            request.remote_addr().map(|addr| addr.ip()),
            request.metadata(),
            &self.trusted_proxies,
        )
    }

    /// Takes one login-type attempt of the client's address, or refuses with
    /// RESOURCE_EXHAUSTED; call it before any password is hashed.
    pub fn limit_attempts<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.attempts
            .check(self.client_ip(request))
            .map_err(Status::from)
    }

    /// The bearer token of the request, if any.
    pub fn bearer<'a, T>(&self, request: &'a Request<T>) -> Option<&'a str> {
        bearer_token(request.metadata())
    }

    /// Where the request came from: the peer, or the entry a trusted proxy added.
    pub fn client<T>(&self, request: &Request<T>) -> ClientInfo {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let user_agent = request
            .metadata()
            .get("user-agent")
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(512).collect());
        ClientInfo {
            address: client_address(peer, request.metadata(), &self.trusted_proxies)
                .map(|ip| ip.to_string()),
            user_agent,
        }
    }
}

fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `x-forwarded-for` entry that is not itself a trusted proxy. The walk goes right to
/// left and believes only what trusted proxies wrote: an entry that is not a bare address
/// (`ip:port`, `unknown`, garbage) ends it with no address, since everything left of it was
/// written by someone no trusted proxy vouches for (an allow-list then refuses). IPv4 clients of
/// a dual-stack listener (`::ffff:a.b.c.d`) are the IPv4 address they carry.
pub fn client_address(
    peer: Option<IpAddr>,
    metadata: &MetadataMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut entries: Vec<&str> = metadata
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.to_str().unwrap_or(""))
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    while let Some(entry) = entries.pop() {
        let Ok(address) = entry.parse::<IpAddr>() else {
            return None;
        };
        client = address.to_canonical();
        if !is_trusted(&client) {
            return Some(client);
        }
    }
    Some(client)
}

/// Gives the client's own mistakes the codes gRPC's status-code guide names, where tonic's codec
/// answers otherwise: a request that does not decode (random bytes, invalid UTF-8, nesting past
/// the limit) is INVALID_ARGUMENT, not INTERNAL, and a message over the size limit is
/// RESOURCE_EXHAUSTED, not OUT_OF_RANGE. Such failures leave as trailers-only responses, whose
/// status is in the headers.
pub fn client_errors_as_client_errors<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.replace("%20", " "))
        .unwrap_or_default();
    let code = match headers.get("grpc-status").map(|value| value.as_bytes()) {
        Some(b"13") if message.starts_with("failed to decode Protobuf message") => "3",
        Some(b"11") if message.starts_with("Error, decoded message length too large") => "8",
        _ => return response,
    };
    headers.insert("grpc-status", http::HeaderValue::from_static(code));
    response
}

const ERROR_DOMAIN: &str = "roster";

/// At most [`bounds::DESCRIPTION_CHARS`] characters of `text`.
fn clip(text: &str) -> String {
    match text.char_indices().nth(bounds::DESCRIPTION_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let mut details = ErrorDetails::new();
        let (code, message, reason) = match err {
            Error::InvalidArgument(violations) => {
                // Bounded, whatever the request: a client's metadata limits must never hide
                // the answer (a header of 100,000 unknown columns is one line, not 19 MB).
                let total = violations.len();
                let mut shown: Vec<FieldViolation> = Vec::new();
                let mut length = 0;
                for violation in violations.into_iter().take(bounds::VIOLATIONS) {
                    let violation =
                        FieldViolation::new(clip(&violation.field), clip(&violation.description));
                    length += violation.field.len() + violation.description.len();
                    if length > bounds::MESSAGE_CHARS && !shown.is_empty() {
                        break;
                    }
                    shown.push(violation);
                }
                let more = total - shown.len();
                let mut message = shown
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                if more > 0 {
                    message.push_str(&format!("; and {more} more"));
                }
                for violation in shown {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                (Code::InvalidArgument, message, "INVALID_ARGUMENT")
            }
            Error::NotFound(what) => (Code::NotFound, format!("{what} not found"), "NOT_FOUND"),
            Error::AlreadyExists(violation) => {
                let message = format!("{}: {}", violation.field, violation.description);
                details.add_bad_request_violation(violation.field, violation.description);
                (Code::AlreadyExists, message, "ALREADY_EXISTS")
            }
            Error::FailedPrecondition { reason, message } => {
                (Code::FailedPrecondition, message, reason)
            }
            Error::PermissionDenied { reason, message } => {
                (Code::PermissionDenied, message, reason)
            }
            Error::Unauthenticated { reason, message } => (Code::Unauthenticated, message, reason),
            Error::ResourceExhausted {
                reason,
                message,
                retry_after,
            } => {
                if let Some(delay) = retry_after {
                    details.set_retry_info(Some(delay));
                }
                (Code::ResourceExhausted, message, reason)
            }
            Error::OutOfRange {
                reason,
                message,
                metadata,
            } => {
                let metadata: std::collections::HashMap<String, String> = metadata
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value))
                    .collect();
                details.set_error_info(reason, ERROR_DOMAIN, metadata);
                return Status::with_error_details(Code::OutOfRange, message, details);
            }
            Error::Aborted(cause) => {
                tracing::info!(cause, "call aborted by a concurrent change");
                (
                    Code::Aborted,
                    "the change met a concurrent one and was undone; try again".into(),
                    "CONCURRENT_CHANGE",
                )
            }
            Error::Unavailable(cause) => {
                tracing::warn!(cause, "dependency unavailable");
                (
                    Code::Unavailable,
                    "the service is temporarily unavailable".into(),
                    "UNAVAILABLE",
                )
            }
            err @ Error::Internal(_) => {
                tracing::error!(cause = err.chain(), "internal error");
                (Code::Internal, "internal error".into(), "INTERNAL")
            }
        };
        details.set_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(entries: &[&str]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for entry in entries {
            metadata.append("x-forwarded-for", entry.parse().expect("ascii"));
        }
        metadata
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn behind_a_trusted_proxy_the_walk_stops_at_an_entry_it_cannot_read() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let proxy = Some(ip("127.0.0.1"));
        let client = |entries: &[&str]| client_address(proxy, &forwarded(entries), &trusted);
        assert_eq!(client(&["203.0.113.9"]), Some(ip("203.0.113.9")));
        assert_eq!(
            client(&["198.51.100.7, 203.0.113.9"]),
            Some(ip("203.0.113.9"))
        );
        // An appended ip:port or "unknown" is not a bare address: nothing left of it is believed.
        assert_eq!(client(&["127.0.0.2, 127.0.0.3:4711"]), None);
        assert_eq!(client(&["127.0.0.2, unknown"]), None);
        assert_eq!(client(&["127.0.0.2", "garbage"]), None);
        // Trusted hops are passed over; all trusted leaves the left-most.
        assert_eq!(client(&["203.0.113.9, 127.0.0.1"]), Some(ip("203.0.113.9")));
        assert_eq!(client(&["127.0.0.1"]), Some(ip("127.0.0.1")));
        assert_eq!(client(&[]), Some(ip("127.0.0.1")));
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_address(Some(ip("203.0.113.1")), &forwarded(&["1.2.3.4"]), &trusted),
            Some(ip("203.0.113.1"))
        );
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_are_their_ipv4_address() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let mapped_proxy = Some(ip("::ffff:127.0.0.1"));
        assert_eq!(
            client_address(mapped_proxy, &forwarded(&["::ffff:203.0.113.9"]), &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_address(Some(ip("::ffff:198.51.100.7")), &MetadataMap::new(), &[]),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn an_error_of_many_violations_stays_small() {
        let violations: Vec<FieldViolation> = (0..100_000)
            .map(|i| FieldViolation::new(format!("field{i}"), "x".repeat(10_000)))
            .collect();
        let status = Status::from(Error::InvalidArgument(violations));
        assert!(status.message().len() < 2_500, "{}", status.message().len());
        assert!(
            status.message().ends_with("and 99996 more"),
            "{}",
            status.message()
        );
        assert!(status.details().len() < 6_000, "{}", status.details().len());
    }
}
