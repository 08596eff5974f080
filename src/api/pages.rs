//! The small pages the mails link to (`ROSTER_PUBLIC_URL/activate`, `/reset-password`,
//! `/confirm-email`), served on roster's own port so that the embedded default has no dead link.
//! Plain HTML with one script and one stylesheet of roster's own, under a Content-Security-Policy
//! that allows nothing else; the script calls AuthService over gRPC-Web on the same origin.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{HeaderValue, Method, Response, StatusCode, header};

/// Nothing but roster's own script, stylesheet and gRPC-Web calls; no framing, no form posts.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The file served at `path`, with its content type.
fn page(path: &str) -> Option<(&'static str, &'static str)> {
    const HTML: &str = "text/html; charset=utf-8";
    Some(match path {
        "/activate" => (HTML, include_str!("pages/activate.html")),
        "/reset-password" => (HTML, include_str!("pages/reset-password.html")),
        "/confirm-email" => (HTML, include_str!("pages/confirm-email.html")),
        "/_roster/pages.js" => (
            "text/javascript; charset=utf-8",
            include_str!("pages/pages.js"),
        ),
        "/_roster/pages.css" => ("text/css; charset=utf-8", include_str!("pages/pages.css")),
        _ => return None,
    })
}

/// Answers GET and HEAD of the pages; everything else goes on to gRPC.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagesLayer;

impl<S> tower::Layer<S> for PagesLayer {
    type Service = PagesService<S>;

    fn layer(&self, inner: S) -> PagesService<S> {
        PagesService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct PagesService<S> {
    inner: S,
}

impl<S, RequestBody> tower::Service<http::Request<RequestBody>> for PagesService<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let method = request.method();
        if (method == Method::GET || method == Method::HEAD)
            && let Some((content_type, body)) = page(request.uri().path())
        {
            let body = if method == Method::HEAD {
                tonic::body::Body::empty()
            } else {
                tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
            };
            return Either::Left(ready(Ok(with_headers(content_type, body))));
        }
        // Browsers ask for it beside every page: no icon, rather than a gRPC refusal.
        if method == Method::GET && request.uri().path() == "/favicon.ico" {
            let mut response = Response::new(tonic::body::Body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            return Either::Left(ready(Ok(response)));
        }
        Either::Right(self.inner.call(request))
    }
}

fn with_headers(
    content_type: &'static str,
    body: tonic::body::Body,
) -> Response<tonic::body::Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // The token is in the page's address: it must not leave in a Referer or stay in a cache.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_load_only_roster_s_own_script_and_stylesheet() {
        for path in ["/activate", "/reset-password", "/confirm-email"] {
            let (content_type, html) = page(path).unwrap();
            assert!(content_type.starts_with("text/html"));
            assert!(html.contains(r#"<script src="/_roster/pages.js" defer></script>"#));
            assert!(html.contains(r#"href="/_roster/pages.css""#));
            assert!(!html.contains("http://") && !html.contains("https://"));
            // No inline script or style: the policy would refuse them.
            assert_eq!(html.matches("<script").count(), 1);
            assert!(!html.contains("style=") && !html.contains("<style"));
        }
        assert!(page("/_roster/pages.js").is_some());
        assert!(page("/roster.v1.AuthService/Login").is_none());
        assert!(!include_str!("pages/pages.js").contains("http"));
    }
}
