//! The browser demo's files (`GATEWAY_WEB_ROOT`): the headers that keep an injected script from
//! running in a page that holds private keys, and caching by content-hashed names. The browser's
//! side of it (the app works under the policy, an injected inline script does not run) is in
//! client/tests/web_demo.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, http1_request, spawn_gateway, upstreams};

/// A web root with a page, a content-hashed script (and its source map) and an unhashed file.
struct WebRoot(PathBuf);

impl WebRoot {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("gateway-web-root-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).unwrap();
        for (name, content) in [
            ("index.html", "<h1>chat</h1>"),
            ("app-7GQ2XK4M.js", "console.log(1)"),
            ("app-7GQ2XK4M.js.map", "{}"),
            ("notes.txt", "not hashed"),
        ] {
            std::fs::write(root.join(name), content).unwrap();
        }
        Self(root)
    }
}

impl Drop for WebRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(root: &Path) -> gateway::Config {
    let nowhere: http::Uri = "http://127.0.0.1:1".parse().unwrap();
    let mut config = gateway::Config::for_tests(upstreams(&nowhere, &nowhere, &nowhere));
    config.web_root = Some(root.to_owned());
    config
}

async fn serve(root: &WebRoot) -> TestApp {
    spawn_gateway(config(&root.0)).await
}

/// The status line and the headers (names lowercased) of a raw HTTP/1.1 response.
fn head_of(response: &[u8]) -> (String, BTreeMap<String, String>) {
    let text = String::from_utf8_lossy(response);
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers)
}

async fn get(addr: SocketAddr, path: &str) -> (String, BTreeMap<String, String>) {
    head_of(&http1_request(addr, &format!("GET {path} HTTP/1.1"), b"").await)
}

/// The directives of a Content-Security-Policy, by name.
fn directives(policy: &str) -> BTreeMap<String, String> {
    policy
        .split(';')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .map(|directive| match directive.split_once(' ') {
            Some((name, sources)) => (name.to_owned(), sources.to_owned()),
            None => (directive.to_owned(), String::new()),
        })
        .collect()
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy_and_never_cached() {
    let root = WebRoot::new();
    let app = serve(&root).await;

    let (status, headers) = get(app.addr, "/").await;

    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let policy = directives(&headers["content-security-policy"]);
    let expected: BTreeMap<String, String> = [
        ("default-src", "'none'"),
        ("script-src", "'self'"),
        ("style-src", "'self'"),
        ("connect-src", "'self'"),
        ("img-src", "'self' data:"),
        ("object-src", "'none'"),
        ("base-uri", "'none'"),
        ("frame-ancestors", "'none'"),
        ("form-action", "'none'"),
    ]
    .into_iter()
    .map(|(name, sources)| (name.to_owned(), sources.to_owned()))
    .collect();
    assert_eq!(policy, expected);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(
        !headers.contains_key("strict-transport-security"),
        "no HSTS over plaintext: {headers:?}"
    );
}

#[tokio::test]
async fn content_hashed_assets_are_cached_for_a_year_and_other_files_revalidated() {
    let root = WebRoot::new();
    let app = serve(&root).await;

    let (script_status, script) = get(app.addr, "/static/app-7GQ2XK4M.js").await;
    let (_, source_map) = get(app.addr, "/static/app-7GQ2XK4M.js.map").await;
    let (notes_status, notes) = get(app.addr, "/static/notes.txt").await;
    let (missing_status, missing) = get(app.addr, "/static/app-ZZZZZZZZ.js").await;

    assert!(script_status.starts_with("HTTP/1.1 200"), "{script_status}");
    assert!(script["content-type"].contains("javascript"), "{script:?}");
    assert_eq!(script["x-content-type-options"], "nosniff");
    assert_eq!(
        script["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        source_map["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(notes_status.starts_with("HTTP/1.1 200"), "{notes_status}");
    assert_eq!(notes["cache-control"], "no-cache");
    // A hashed name that is not there (yet) must not be remembered as missing.
    assert!(
        missing_status.starts_with("HTTP/1.1 404"),
        "{missing_status}"
    );
    assert_eq!(missing["cache-control"], "no-cache");
}

#[tokio::test]
async fn over_tls_every_answer_carries_strict_transport_security() {
    let root = WebRoot::new();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (chain, key) = (root.0.join("chain.pem"), root.0.join("key.pem"));
    std::fs::write(&chain, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut config = config(&root.0);
    config.tls = Some((chain, key));
    let app = spawn_gateway(config).await;

    let mut answers = Vec::new();
    for path in ["/", "/healthz"] {
        let mut tls = crate::server::connect_tls(app.addr, certified.cert.der(), b"http/1.1").await;
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        answers.push(head_of(&response));
    }

    for (status, headers) in answers {
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(
            headers.get("strict-transport-security").map(String::as_str),
            Some("max-age=31536000"),
            "{headers:?}"
        );
    }
}
