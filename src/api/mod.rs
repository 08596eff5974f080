//! Transport: the gRPC services, proto <-> model conversion, and the one place where errors
//! become statuses.

mod activity;
mod auth;
mod convert;
mod cursor;
mod limits;
mod roles;
mod security;
mod sessions;
mod teams;
mod two_factor;
mod users;

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;
use tonic::{Code, Request, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::App,
    model::{ClientInfo, Error, Principal},
};

pub use activity::ActivityApi;
pub use auth::AuthApi;
pub use limits::AttemptLimiter;
pub use roles::RoleApi;
pub use security::SecurityApi;
pub use sessions::SessionApi;
pub use teams::TeamApi;
pub use two_factor::TwoFactorApi;
pub use users::{UserApi, default_listing_token_after};

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
    pub fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let token = bearer_token(request.metadata()).ok_or_else(|| {
            Status::from(Error::unauthenticated(
                "MISSING_TOKEN",
                "send authorization: Bearer <access token>",
            ))
        })?;
        let principal = self.app.authenticate_from(token, self.client_ip(request))?;
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
/// right-most `x-forwarded-for` entry that is not itself a trusted proxy.
pub fn client_address(
    peer: Option<IpAddr>,
    metadata: &MetadataMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = metadata
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
}

const ERROR_DOMAIN: &str = "roster";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let mut details = ErrorDetails::new();
        let (code, message, reason) = match err {
            Error::InvalidArgument(violations) => {
                let message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                for violation in violations {
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
            Error::ResourceExhausted { reason, message } => {
                (Code::ResourceExhausted, message, reason)
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
            Error::Internal(cause) => {
                tracing::error!(cause, "internal error");
                (Code::Internal, "internal error".into(), "INTERNAL")
            }
        };
        details.set_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
        Status::with_error_details(code, message, details)
    }
}
