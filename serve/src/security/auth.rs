//! The authentication and authorization layer: reads `authorization: Bearer
//! <token>`, verifies it with the [`KeySet`], checks the role against the RPC
//! (by gRPC path), and passes the caller's [`Principal`] on in the request
//! extensions for the layers and handlers behind it.
//!
//! `grpc.health.v1.Health` is always open so probes work without a token.
//! Reflection needs a valid token of any role (grpcurl's `-H` sends it to
//! reflection too). The role table itself is in `roles.rs`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::codegen::http::{Request, header};
use tonic::codegen::{BoxFuture, Service};
use tower::Layer;

use super::counters::SecurityCounters;
use super::live_keys::{LiveKeys, Signer};
pub use super::roles::{Principal, required_role};
use super::token::{Claims, KeySet, TokenError, key_id_of};
use tower::BoxError;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer …` header.
    #[error("missing authorization: Bearer token")]
    Missing,
    /// The token is not valid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token is valid but its role may not call this RPC.
    #[error("role {role} may not call {rpc}")]
    Denied {
        /// The caller's role.
        role: &'static str,
        /// The gRPC path called.
        rpc: String,
    },
}

/// Token verification settings shared by every connection. The secrets
/// are [`LiveKeys`]: a reload replaces them for every check that follows.
#[derive(Debug)]
pub struct Verifier {
    keys: Arc<LiveKeys>,
    /// Clock-skew leeway on expiry.
    pub leeway: Duration,
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Verifier {
    /// A verifier accepting `keys`, with `leeway` of clock skew on expiry.
    pub fn new(keys: KeySet, leeway: Duration) -> Self {
        Self {
            keys: Arc::new(LiveKeys::new(keys)),
            leeway,
        }
    }

    /// The secrets, as a reload replaces them.
    pub fn keys(&self) -> &Arc<LiveKeys> {
        &self.keys
    }

    /// Verifies a bare token at `now` (Unix seconds) with this verifier's
    /// keys and leeway: what [`Verifier::check`] does with the header's
    /// token, and the proxy's RESP `AUTH` with its password.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        self.verify_signed(token, now).map(|(claims, _)| claims)
    }

    /// [`Verifier::verify`], with the key that signed the token (for
    /// callers that keep the caller beyond this request).
    pub fn verify_signed(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Claims, Option<Signer>), TokenError> {
        let token = token.trim();
        let keys = self.keys.current();
        let claims = keys.verify(token, now, self.leeway.as_secs())?;
        let signer = key_id_of(token).and_then(|kid| Signer::of(self.keys.clone(), &keys, kid));
        Ok((claims, signer))
    }

    /// Whether claims that expire at `exp` are past it at `now`, beyond the
    /// leeway (for callers that keep a verified token, like a RESP session).
    pub fn expired(&self, exp: u64, now: u64) -> bool {
        exp.saturating_add(self.leeway.as_secs()) < now
    }

    /// Authenticates and authorizes one request.
    pub fn check<B>(&self, req: &Request<B>) -> Result<Option<Principal>, AuthError> {
        let Some(need) = required_role(req.uri().path()) else {
            return Ok(None);
        };
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")))
            .ok_or(AuthError::Token(TokenError::Malformed))?;
        let (claims, signed_by) = self.verify_signed(token, unix_now())?;
        if claims.role < need {
            return Err(AuthError::Denied {
                role: claims.role.name(),
                rpc: req.uri().path().to_owned(),
            });
        }
        Ok(Some(Principal {
            subject: claims.sub.into(),
            role: claims.role,
            valid_until: claims.exp.saturating_add(self.leeway.as_secs()),
            signed_by,
        }))
    }
}

/// Adds [`Auth`] to a service; `None` turns authentication off.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: Option<Arc<Verifier>>,
    counters: SecurityCounters,
}

impl AuthLayer {
    /// A layer checking tokens with `verifier` (or nothing, when `None`).
    pub fn new(verifier: Option<Arc<Verifier>>, counters: SecurityCounters) -> Self {
        Self { verifier, counters }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            verifier: self.verifier.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// The authentication middleware.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    verifier: Option<Arc<Verifier>>,
    counters: SecurityCounters,
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(verifier) = &self.verifier {
            match verifier.check(&req) {
                Ok(Some(principal)) => {
                    req.extensions_mut().insert(principal);
                }
                Ok(None) => {}
                Err(e) => {
                    match &e {
                        AuthError::Missing => self.counters.auth_failure("missing"),
                        AuthError::Token(t) => self.counters.auth_failure(t.reason()),
                        AuthError::Denied { .. } => self.counters.permission_denied(),
                    }
                    return Box::pin(async move { Err(e.into()) });
                }
            }
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::token::Role;
    use tower_test::mock;

    fn verifier() -> Arc<Verifier> {
        let mut keys = KeySet::default();
        keys.insert("k1", b"0123456789abcdef0123456789abcdef")
            .expect("valid");
        Arc::new(Verifier::new(keys, Duration::from_secs(5)))
    }

    fn token(v: &Verifier, role: Role, exp_from_now: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let exp = now.saturating_add_signed(exp_from_now);
        v.keys()
            .current()
            .sign(&Claims {
                sub: "alice".into(),
                role,
                iat: now,
                exp,
            })
            .expect("signs")
    }

    fn req(path: &str, auth: Option<String>) -> Request<()> {
        let mut b = Request::builder().uri(format!("http://node{path}"));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).expect("request")
    }

    async fn run(v: Option<Arc<Verifier>>, r: Request<()>) -> Result<Option<Principal>, BoxError> {
        let layer = AuthLayer::new(v, SecurityCounters::default());
        let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, (), _>(layer);
        handle.allow(1);
        assert!(matches!(svc.poll_ready(), Poll::Ready(Ok(()))));
        let fut = svc.call(r);
        let served = tokio::spawn(async move {
            let (r, send) = handle.next_request().await?;
            send.send_response(());
            Some(r.extensions().get::<Principal>().cloned())
        });
        let result = fut.await;
        drop(svc);
        let seen = served.await.expect("join");
        result.map(|()| seen.flatten())
    }

    fn auth_err(e: BoxError) -> AuthError {
        e.downcast::<AuthError>().map(|b| *b).expect("an AuthError")
    }

    #[tokio::test]
    async fn roles_against_rpcs_and_token_failures() {
        let v = verifier();
        let get = "/distcache.v1.CacheService/Get";
        let p = run(
            Some(v.clone()),
            req(
                get,
                Some(format!("Bearer {}", token(&v, Role::Readonly, 60))),
            ),
        )
        .await
        .expect("readonly may get");
        assert_eq!(p.map(|p| p.role), Some(Role::Readonly));
        let e = run(
            Some(v.clone()),
            req(
                "/distcache.v1.CacheService/Set",
                Some(format!("Bearer {}", token(&v, Role::Readonly, 60))),
            ),
        )
        .await
        .expect_err("readonly may not set");
        assert!(matches!(
            auth_err(e),
            AuthError::Denied {
                role: "readonly",
                ..
            }
        ));
        let e = run(Some(v.clone()), req(get, None))
            .await
            .expect_err("no token");
        assert_eq!(auth_err(e), AuthError::Missing);
        let e = run(Some(v.clone()), req(get, Some("Basic abc".into())))
            .await
            .expect_err("basic");
        assert_eq!(auth_err(e), AuthError::Token(TokenError::Malformed));
        let e = run(
            Some(v.clone()),
            req(get, Some(format!("Bearer {}", token(&v, Role::Admin, -60)))),
        )
        .await
        .expect_err("expired");
        assert_eq!(auth_err(e), AuthError::Token(TokenError::Expired));
        // Health is open; without a verifier everything is.
        run(Some(v.clone()), req("/grpc.health.v1.Health/Check", None))
            .await
            .expect("open");
        run(None, req(get, None)).await.expect("auth off");
    }
}
