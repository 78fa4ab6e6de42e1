//! `http://…` discovery: a GET every interval, whose JSON answer is either
//!
//! - Consul's `/v1/health/service/NAME?passing`: an array of objects; each
//!   node is `{Service.Address}:{Service.Port}` (the scheme follows the
//!   proxy's TLS setting: `https://` with `--tls-ca`), with `Node.Address`
//!   when `Service.Address` is empty (as Consul leaves it for services
//!   registered without an address); or
//! - a plain array of node URLs: `["http://10.0.0.1:7001", "10.0.0.2:7001"]`.
//!
//! With `?passing`, Consul leaves out instances whose checks fail, so they
//! leave the ring; without it, every registered instance stays on the ring
//! and the SDK's own health checks skip the unhealthy ones.
//!
//! Plain HTTP/1.1 through hyper's pooled client (already in the build for
//! tonic); answers over [`MAX_ANSWER_BYTES`] are refused.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::error::SourceError;

/// Largest discovery answer read.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The HTTP client discovery polls with.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A client with a pooled connection per endpoint.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `uri` as logs and errors show it: without userinfo (`user:pass@`) and
/// with the query's values replaced by `…` (Consul takes `?token=`), so a
/// credential in a discovery URL never reaches a log line.
pub fn redacted(uri: &hyper::Uri) -> String {
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(host) = uri.host() {
        out.push_str(host);
    }
    if let Some(port) = uri.port_u16() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(uri.path());
    if let Some(query) = uri.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=…"),
                None => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// GETs `uri` and parses its answer; all within `timeout`.
pub async fn fetch(
    client: &HttpClient,
    uri: &hyper::Uri,
    timeout: Duration,
    consul_ids: bool,
) -> Result<Vec<String>, SourceError> {
    let fail = |reason: String| SourceError::Http {
        uri: redacted(uri),
        reason,
    };
    let request = async {
        let req = hyper::Request::get(uri.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| fail(e.to_string()))?;
        let res = client.request(req).await.map_err(|e| fail(e.to_string()))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(fail(format!("status {status}: {}", text.trim())));
        }
        parse_with(&body, consul_ids)
    };
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
}

/// The node URLs in a discovery answer (Consul health list or URL list).
pub fn parse(body: &[u8]) -> Result<Vec<String>, SourceError> {
    parse_with(body, false)
}

/// [`parse`], naming Consul entries `Service.ID=address:port` when
/// `consul_ids` is set (an entry without a `Service.ID` is then refused).
pub fn parse_with(body: &[u8], consul_ids: bool) -> Result<Vec<String>, SourceError> {
    let bad = |why: String| SourceError::Answer(why);
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Array(entries) = value else {
        return Err(bad("expected a JSON array".into()));
    };
    if entries.is_empty() {
        return Err(SourceError::Empty);
    }
    if entries.len() > distcache::MAX_NODES {
        return Err(SourceError::TooMany(entries.len()));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Value::String(url) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
            Value::Object(_) => {
                consul_entry(e, consul_ids).map_err(|why| bad(format!("entry {i}: {why}")))
            }
            _ => Err(bad(format!(
                "entry {i}: expected a node URL or a Consul health entry"
            ))),
        })
        .collect()
}

/// `address:port` of one entry of Consul's health answer (no scheme: the
/// SDK adds the one the proxy's TLS setting calls for), as
/// `Service.ID=address:port` with `ids`.
fn consul_entry(e: &Value, ids: bool) -> Result<String, String> {
    let service = e
        .get("Service")
        .ok_or("no Service (not a Consul health entry)")?;
    let id = if ids {
        let id = service
            .get("ID")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or("no Service.ID (--discovery-consul-ids names nodes by it)")?;
        Some(id)
    } else {
        None
    };
    let port = service
        .get("Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .ok_or("Service.Port is missing or not a port")?;
    let address = [
        service.get("Address"),
        e.get("Node").and_then(|n| n.get("Address")),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .map(str::trim)
    .find(|a| !a.is_empty())
    .ok_or("neither Service.Address nor Node.Address")?;
    let at = match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{address}:{port}"),
    };
    Ok(match id {
        Some(id) => format!("{id}={at}"),
        None => at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn logged_urls_carry_no_credentials() {
        let uri: hyper::Uri =
            "http://ops:hunter2@consul.local:8500/v1/health/service/distcache?passing&token=s3cr3t"
                .parse()
                .expect("uri");
        let shown = redacted(&uri);
        assert_eq!(
            shown,
            "http://consul.local:8500/v1/health/service/distcache?passing&token=…"
        );
        let source = super::super::Source::Http(uri);
        assert_eq!(source.shown(), shown, "what logs show");
        let plain: hyper::Uri = "http://[::1]:9000/nodes".parse().expect("uri");
        assert_eq!(redacted(&plain), "http://[::1]:9000/nodes");
    }

    #[test]
    fn consul_health_answers_name_their_services() {
        // Trimmed from a real `/v1/health/service/distcache?passing` answer.
        let body = br#"[
          {"Node": {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"},
           "Service": {"ID": "distcache-1", "Service": "distcache", "Address": "10.1.0.1", "Port": 7001},
           "Checks": [{"Status": "passing"}]},
          {"Node": {"Node": "n2", "Address": "10.0.0.2"},
           "Service": {"ID": "distcache-2", "Service": "distcache", "Address": "", "Port": 7002},
           "Checks": []},
          {"Node": {"Address": "fe80::1"}, "Service": {"Port": 7003}}
        ]"#;
        assert_eq!(
            parse(body).expect("consul"),
            ["10.1.0.1:7001", "10.0.0.2:7002", "[fe80::1]:7003"]
        );
    }

    #[test]
    fn consul_entries_may_be_named_by_their_service_id() {
        let body = br#"[
          {"Node": {"Address": "10.0.0.9"}, "Service": {"ID": "distcache-1", "Address": "10.1.0.1", "Port": 7001}},
          {"Node": {"Address": "10.0.0.9"}, "Service": {"ID": " distcache-2 ", "Address": "", "Port": 7002}}
        ]"#;
        assert_eq!(
            parse_with(body, true).expect("ids"),
            ["distcache-1=10.1.0.1:7001", "distcache-2=10.0.0.9:7002"]
        );
        assert_eq!(
            parse(body).expect("addresses"),
            ["10.1.0.1:7001", "10.0.0.9:7002"]
        );
        let no_id = br#"[{"Service": {"Address": "10.1.0.1", "Port": 7001}}]"#;
        let e = parse_with(no_id, true).expect_err("no id");
        assert!(e.to_string().contains("Service.ID"), "{e}");
    }

    #[test]
    fn plain_url_lists_are_taken_as_they_are() {
        assert_eq!(
            parse(br#"["http://10.0.0.1:7001", " 10.0.0.2:7001 "]"#).expect("list"),
            ["http://10.0.0.1:7001", "10.0.0.2:7001"]
        );
    }

    #[test]
    fn an_answer_naming_too_many_nodes_is_refused_whole() {
        // 20,000 Consul entries (about 1.4 MB): refused before any URL is
        // built, instead of a ring of three million virtual nodes.
        let entry = r#"{"Service": {"Address": "10.0.0.1", "Port": 7001}}"#;
        let body = format!("[{}]", vec![entry; 20_000].join(","));
        let e = parse(body.as_bytes()).expect_err("too many");
        assert!(matches!(e, SourceError::TooMany(20_000)), "{e}");
        let ok = format!("[{}]", vec![entry; distcache::MAX_NODES].join(","));
        assert_eq!(
            parse(ok.as_bytes()).expect("at the limit").len(),
            distcache::MAX_NODES
        );
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        for (body, why) in [
            (&b""[..], "not JSON"),
            (b"<html>502 Bad Gateway</html>", "not JSON"),
            (b"{\"nodes\": []}", "expected a JSON array"),
            (b"\"http://a:1\"", "expected a JSON array"),
            (b"[]", "lists no node"),
            (b"[\"http://a:1\", 7]", "entry 1: expected a node URL"),
            (b"[\"\"]", "entry 0"),
            (b"[null]", "entry 0"),
            (b"[{\"Node\": {\"Address\": \"10.0.0.1\"}}]", "no Service"),
            (
                b"[{\"Service\": {\"Address\": \"10.0.0.1\"}}]",
                "Service.Port",
            ),
            (
                b"[{\"Service\": {\"Address\": \"a\", \"Port\": 70000}}]",
                "Service.Port",
            ),
            (
                b"[{\"Service\": {\"Address\": \"a\", \"Port\": \"7001\"}}]",
                "Service.Port",
            ),
            (
                b"[{\"Service\": {\"Address\": \"\", \"Port\": 7001}}]",
                "Node.Address",
            ),
            (
                b"[{\"Service\": {\"Port\": 7001}, \"Node\": {\"Address\": 5}}]",
                "Node.Address",
            ),
            (b"[[\"http://a:1\"]]", "entry 0"),
        ] {
            let e = parse(body).expect_err(&String::from_utf8_lossy(body));
            assert!(
                e.to_string().contains(why),
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
