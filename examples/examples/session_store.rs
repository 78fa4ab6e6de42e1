//! Web sessions in the cache: an axum service whose sessions expire (TTL)
//! and whose shopping cart survives concurrent updates (compare-and-swap
//! on the session's version, with a retry loop).
//!
//! ```text
//! cargo run -p distcache-examples --example session_store
//! cargo run -p distcache-examples --example session_store -- --serve   # then curl it
//! ```
//!
//! On three nodes started in this process (or `DISTCACHE_NODES`), the
//! service listens on a loopback port and the example drives it over HTTP:
//! it logs in, sends 30 add-to-cart requests at once for the same session,
//! reads the cart back (every item counted, none lost to a concurrent
//! write), then logs out. With `--serve` it then keeps serving (Ctrl-C
//! stops it) and prints `curl` lines to try.
//!
//! | Route | What it does |
//! |-------|--------------|
//! | `POST /login/{user}` | new session (random id, `sid` cookie), TTL 30 min |
//! | `GET /cart` | the session, its cart and its time left |
//! | `POST /cart/{item}` | one more `item`: read, change, compare-and-swap, retry on a lost race; refreshes the TTL |
//! | `POST /logout` | deletes the session |
//!
//! Each update reads the session with its version and writes it back with
//! `compare_and_swap(key, version, …)`: when another request wrote in
//! between, the swap is refused (`applied == false`) and the update starts
//! again from a fresh read, so no update overwrites another.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use distcache::Client;
use distcache_examples::{Cluster, NODES_ENV};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long a session lives after its last update.
const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// Tries of one update before it gives up with 409 Conflict.
const MAX_CAS_ATTEMPTS: u32 = 100;
/// Add-to-cart requests the demo sends at once.
const CONCURRENT_ADDS: usize = 30;

/// What the cache holds under `session:ID`, as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    user: String,
    cart: BTreeMap<String, u32>,
}

/// The sessions of one service.
#[derive(Debug, Clone)]
struct Sessions {
    cache: Client,
    ttl: Duration,
}

/// Why a request failed, and the status it answers.
#[derive(Debug)]
enum AppError {
    /// No `sid` cookie, or its session expired or ended: 401.
    NoSession,
    /// An update lost the race `MAX_CAS_ATTEMPTS` times: 409.
    Contended,
    /// The cache failed: 503.
    Cache(distcache::Error),
    /// A session that is not our JSON: 500.
    Corrupt(serde_json::Error),
}

impl From<distcache::Error> for AppError {
    fn from(e: distcache::Error) -> Self {
        Self::Cache(e)
    }
}

impl From<serde_json::Error> for AppError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NoSession => (StatusCode::UNAUTHORIZED, "no session".to_owned()),
            Self::Contended => (
                StatusCode::CONFLICT,
                "too many concurrent updates".to_owned(),
            ),
            Self::Cache(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Self::Corrupt(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        json(status, &serde_json::json!({ "error": message }))
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let body = serde_json::to_string(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn key(sid: &str) -> String {
    format!("session:{sid}")
}

impl Sessions {
    /// A new session for `user`; its id.
    async fn create(&self, user: String) -> Result<String, AppError> {
        let sid = format!("{:032x}", rand::random::<u128>());
        let session = serde_json::to_vec(&Session {
            user,
            cart: BTreeMap::new(),
        })?;
        // If-absent: an id that clashed (2^-128) would not take over another session.
        if !self
            .cache
            .set_if_absent(key(&sid), session, Some(self.ttl))
            .await?
        {
            return Err(AppError::Contended);
        }
        Ok(sid)
    }

    /// The session and its time left.
    async fn load(&self, sid: &str) -> Result<(Session, Option<Duration>), AppError> {
        let entry = self.cache.get(key(sid)).await?.ok_or(AppError::NoSession)?;
        Ok((serde_json::from_slice(&entry.value)?, entry.ttl))
    }

    /// Applies `change` to the session, however many requests change it at
    /// once: the session after it, and how many races it lost first.
    async fn update(
        &self,
        sid: &str,
        change: impl Fn(&mut Session),
    ) -> Result<(Session, u32), AppError> {
        let key = key(sid);
        for lost in 0..MAX_CAS_ATTEMPTS {
            let entry = self.cache.get(&key).await?.ok_or(AppError::NoSession)?;
            let mut session: Session = serde_json::from_slice(&entry.value)?;
            change(&mut session);
            let written = serde_json::to_vec(&session)?;
            let swap = self
                .cache
                .compare_and_swap(&key, entry.version, written, Some(self.ttl))
                .await?;
            if swap.applied {
                return Ok((session, lost));
            }
            // Another request wrote since the read: read again. A short,
            // jittered pause spreads out requests that keep colliding.
            let pause = rand::random_range(0..=u64::from(lost.min(10)) * 200);
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
        Err(AppError::Contended)
    }

    async fn end(&self, sid: &str) -> Result<(), AppError> {
        self.cache.delete(key(sid)).await?;
        Ok(())
    }
}

/// The session id in the request's `sid` cookie.
fn sid(headers: &HeaderMap) -> Result<String, AppError> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("sid="))
        .map(str::to_owned)
        .ok_or(AppError::NoSession)
}

async fn login(State(s): State<Sessions>, Path(user): Path<String>) -> Result<Response, AppError> {
    let sid = s.create(user).await?;
    let cookie = format!(
        "sid={sid}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}",
        s.ttl.as_secs()
    );
    let mut r = json(StatusCode::CREATED, &serde_json::json!({ "session": sid }));
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn show_cart(State(s): State<Sessions>, headers: HeaderMap) -> Result<Response, AppError> {
    let (session, left) = s.load(&sid(&headers)?).await?;
    let body = serde_json::json!({
        "user": session.user,
        "cart": session.cart,
        "expires_in_ms": left.map(|d| d.as_millis() as u64),
    });
    Ok(json(StatusCode::OK, &body))
}

async fn add_to_cart(
    State(s): State<Sessions>,
    headers: HeaderMap,
    Path(item): Path<String>,
) -> Result<Response, AppError> {
    let (session, lost) = s
        .update(&sid(&headers)?, |session| {
            *session.cart.entry(item.clone()).or_insert(0) += 1;
        })
        .await?;
    let body = serde_json::json!({ "cart": session.cart, "cas_retries": lost });
    Ok(json(StatusCode::OK, &body))
}

async fn logout(State(s): State<Sessions>, headers: HeaderMap) -> Result<StatusCode, AppError> {
    s.end(&sid(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn app(sessions: Sessions) -> Router {
    Router::new()
        .route("/login/{user}", post(login))
        .route("/cart", get(show_cart))
        .route("/cart/{item}", post(add_to_cart))
        .route("/logout", post(logout))
        .with_state(sessions)
}

/// One HTTP/1.1 request on a connection of its own: (status, the `sid`
/// cookie set, the body). Enough of a client for this demo.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    sid: Option<&str>,
) -> std::io::Result<(u16, Option<String>, serde_json::Value)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let cookie = sid
        .map(|s| format!("cookie: sid={s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{cookie}content-length: 0\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let set_sid = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let value = value.trim().strip_prefix("sid=")?;
        name.eq_ignore_ascii_case("set-cookie")
            .then(|| value.split(';').next().unwrap_or(value).to_owned())
    });
    let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Ok((status, set_sid, body))
}

/// What the demo saw.
#[derive(Debug)]
struct Demo {
    cart: serde_json::Value,
    adds_ok: usize,
    cas_retries: u64,
    after_logout: u16,
}

/// Logs in, adds to the cart from many requests at once, reads it back,
/// logs out: the service at `addr` as a browser (many browsers) sees it.
async fn demo(addr: SocketAddr) -> Result<Demo, Box<dyn std::error::Error + Send + Sync>> {
    let (status, sid, _) = request(addr, "POST", "/login/alice", None).await?;
    let sid = sid.filter(|_| status == 201).ok_or("login failed")?;
    let mut adds = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT_ADDS {
        let (sid, item) = (sid.clone(), if i % 2 == 0 { "apple" } else { "pear" });
        adds.spawn(
            async move { request(addr, "POST", &format!("/cart/{item}"), Some(&sid)).await },
        );
    }
    let (mut adds_ok, mut cas_retries) = (0, 0);
    while let Some(add) = adds.join_next().await {
        let (status, _, body) = add??;
        if status == 200 {
            adds_ok += 1;
            cas_retries += body["cas_retries"].as_u64().unwrap_or(0);
        }
    }
    let (_, _, cart) = request(addr, "GET", "/cart", Some(&sid)).await?;
    request(addr, "POST", "/logout", Some(&sid)).await?;
    let (after_logout, _, _) = request(addr, "GET", "/cart", Some(&sid)).await?;
    Ok(Demo {
        cart,
        adds_ok,
        cas_retries,
        after_logout,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    distcache_examples::init_tracing();
    let serve = std::env::args().any(|a| a == "--serve");
    let cluster = Cluster::from_list_or_start(std::env::var(NODES_ENV).ok()).await?;
    println!("nodes: {}", cluster.urls().join(", "));
    let sessions = Sessions {
        cache: cluster.client().await?,
        ttl: SESSION_TTL,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app(sessions)).await });
    println!("session service on http://{addr}");

    let d = demo(addr).await?;
    println!(
        "{CONCURRENT_ADDS} concurrent add-to-cart requests: {} ok, {} compare-and-swap retries",
        d.adds_ok, d.cas_retries
    );
    println!("cart: {}", d.cart);
    println!("after logout, GET /cart answers {}", d.after_logout);

    if serve {
        println!("serving until Ctrl-C; try:");
        println!("  curl -si -X POST http://{addr}/login/bob   # note the sid cookie");
        println!("  curl -s -X POST -b sid=SID http://{addr}/cart/apple");
        println!("  curl -s -b sid=SID http://{addr}/cart");
        tokio::signal::ctrl_c().await?;
    }
    server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn service(ttl: Duration) -> (Cluster, SocketAddr) {
        let cluster = Cluster::start(3).await.unwrap();
        let sessions = Sessions {
            cache: cluster.client().await.unwrap(),
            ttl,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app(sessions)).await });
        (cluster, addr)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_cart_updates_are_all_kept() {
        let (_cluster, addr) = service(SESSION_TTL).await;
        let d = demo(addr).await.unwrap();
        assert_eq!(d.adds_ok, CONCURRENT_ADDS, "{d:?}");
        let half = (CONCURRENT_ADDS / 2) as u64;
        assert_eq!(d.cart["user"], "alice", "{d:?}");
        assert_eq!(d.cart["cart"]["apple"], half, "{d:?}");
        assert_eq!(d.cart["cart"]["pear"], half, "{d:?}");
        assert!(d.cart["expires_in_ms"].as_u64().unwrap() <= SESSION_TTL.as_millis() as u64);
        assert_eq!(d.after_logout, 401, "{d:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_expires_after_its_ttl() {
        let (_cluster, addr) = service(Duration::from_millis(300)).await;
        let (_, sid, _) = request(addr, "POST", "/login/bob", None).await.unwrap();
        let sid = sid.unwrap();
        let (status, _, _) = request(addr, "GET", "/cart", Some(&sid)).await.unwrap();
        assert_eq!(status, 200);
        // Polled: 401 once the TTL has passed.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _, _) = request(addr, "GET", "/cart", Some(&sid)).await.unwrap();
            if status == 401 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the session never expired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, _, _) = request(addr, "POST", "/cart/apple", Some(&sid))
            .await
            .unwrap();
        assert_eq!(status, 401);
    }
}
