//! A malicious server for the clients' tests: an HTTP/2 (h2c) proxy in front of one of the real
//! services that forwards every call unchanged, except the responses of the methods a test asks
//! to rewrite (unary ones: the whole response is read, each message rewritten, the trailers
//! kept). Put in front of auth for every caller (the gateway, chat and group), it makes the whole
//! server tell the same lie, so that an attack succeeds unless a client notices it.

#![allow(dead_code)] // Each test binary uses a part.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::{
    Request, Response,
    body::{Frame, Incoming},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

type Rule = Arc<dyn Fn(Bytes) -> Bytes + Send + Sync>;
type Rules = Arc<Mutex<HashMap<String, Rule>>>;
/// How many answers of each method are still to be lost (see [`RewritingProxy::lose_answers`]).
type Losses = Arc<Mutex<HashMap<String, usize>>>;

/// The proxy; it serves until the test ends.
pub struct RewritingProxy {
    pub addr: SocketAddr,
    rules: Rules,
    losses: Losses,
}

impl RewritingProxy {
    /// Starts a proxy in front of `target` on a loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rules: Rules = Arc::default();
        let losses: Losses = Arc::default();
        let (shared_rules, shared_losses) = (rules.clone(), losses.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(serve_connection(
                    inbound,
                    target,
                    shared_rules.clone(),
                    shared_losses.clone(),
                ));
            }
        });
        RewritingProxy {
            addr,
            rules,
            losses,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, every response message of `path` (e.g. `/auth.v1.AuthService/LookupUsers`)
    /// is decoded as `M`, changed by `rewrite`, and encoded again.
    pub fn rewrite<M>(&self, path: &str, rewrite: impl Fn(&mut M) + Send + Sync + 'static)
    where
        M: prost::Message + Default,
    {
        let rule: Rule = Arc::new(move |bytes: Bytes| {
            let mut message = M::decode(bytes).expect("the upstream's answer decodes");
            rewrite(&mut message);
            Bytes::from(message.encode_to_vec())
        });
        self.rules.lock().unwrap().insert(path.to_owned(), rule);
    }

    /// The next `count` calls of `path` reach the service, which acts on them, and are answered
    /// UNAVAILABLE once it has: an answer lost on the way back, as when a connection breaks.
    pub fn lose_answers(&self, path: &str, count: usize) {
        self.losses.lock().unwrap().insert(path.to_owned(), count);
    }

    /// How many of the answers [`RewritingProxy::lose_answers`] asked for are still to be lost.
    pub fn answers_to_lose(&self, path: &str) -> usize {
        self.losses.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Stops rewriting `path`.
    pub fn stop_rewriting(&self, path: &str) {
        self.rules.lock().unwrap().remove(path);
    }
}

async fn serve_connection(inbound: TcpStream, target: SocketAddr, rules: Rules, losses: Losses) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let Ok((sender, connection)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(outbound)).await
    else {
        return;
    };
    tokio::spawn(connection);
    let service = service_fn(move |request: Request<Incoming>| {
        let mut sender = sender.clone();
        let rules = rules.clone();
        let losses = losses.clone();
        async move {
            let path = request.uri().path().to_owned();
            let rule = rules.lock().unwrap().get(&path).cloned();
            let response = sender.send_request(request).await?;
            if take_loss(&losses, &path) {
                // The whole answer first: the service has done what was asked.
                response.into_body().collect().await?;
                return Ok(unavailable());
            }
            match rule {
                None => Ok::<_, hyper::Error>(response.map(BodyExt::boxed)),
                Some(rule) => rewritten(response, &rule).await,
            }
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(inbound), service)
        .await;
}

fn take_loss(losses: &Losses, path: &str) -> bool {
    let mut losses = losses.lock().unwrap();
    match losses.get_mut(path) {
        Some(left) if *left > 0 => {
            *left -= 1;
            true
        }
        _ => false,
    }
}

/// A trailers-only gRPC answer: UNAVAILABLE.
fn unavailable() -> Response<BoxBody<Bytes, hyper::Error>> {
    let empty = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {});
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", "14")
        .header("grpc-message", "the answer was lost on the way")
        .body(BodyExt::boxed(empty))
        .unwrap()
}

/// The response with each of its gRPC messages rewritten, and its trailers.
async fn rewritten(
    response: Response<Incoming>,
    rule: &Rule,
) -> Result<Response<BoxBody<Bytes, hyper::Error>>, hyper::Error> {
    let (mut parts, body) = response.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    let mut data = collected.to_bytes();
    let mut out = BytesMut::new();
    // gRPC framing: a flag byte (0: a message, uncompressed), a u32 length, the message.
    while data.remaining() >= 5 {
        let flag = data.get_u8();
        let length = data.get_u32() as usize;
        let message = data.split_to(length.min(data.len()));
        let message = if flag == 0 { rule(message) } else { message };
        out.put_u8(flag);
        out.put_u32(u32::try_from(message.len()).unwrap());
        out.put(message);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let mut frames = vec![Ok(Frame::data(out.freeze()))];
    if let Some(trailers) = trailers {
        frames.push(Ok(Frame::trailers(trailers)));
    }
    let body = StreamBody::new(futures::stream::iter(frames));
    Ok(Response::from_parts(parts, BodyExt::boxed(body)))
}
