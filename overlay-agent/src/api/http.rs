//! The status endpoint's HTTP: just enough HTTP/1.1 for `GET /status`,
//! `GET /healthz` and `POST /forget/NODE` on a loopback port, and the
//! blocking client the CLI uses. One request per connection, bodies only in
//! responses, every read bounded in size and time.

use std::{
    future::Future,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::watch,
};
use tracing::{Instrument as _, debug, info_span, warn};

/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, query string removed.
    pub path: String,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_string_pretty(value).expect("plain data serialises") + "\n",
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// What answers requests.
pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Serves `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, handler: Handler, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, handler).await {
                            debug!(error = %e, %peer, "status connection ended early");
                        }
                    }.instrument(info_span!("http")));
                }
                Err(e) => {
                    warn!(error = %e, "accepting on the status port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(mut stream: tokio::net::TcpStream, handler: Handler) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    let response = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Err(_) => Response::text(408, "request timeout\n"),
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            Response::text(431, "request head too large\n")
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => match parse_head(&head) {
            Some(req) => handler(req).await,
            None => Response::text(400, "malformed request\n"),
        },
    };
    stream.write_all(&render(&response)).await?;
    stream.shutdown().await
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?;
    let mut words = line.split(' ');
    let method = words.next()?.to_owned();
    let target = words.next()?;
    let version = words.next()?;
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') || method.is_empty() {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target).to_owned();
    Some(Request { method, path })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn render(r: &Response) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len(),
        r.body
    )
    .into_bytes()
}

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there: the agent is not running (in this network
    /// namespace).
    #[error("no agent answers on {0} (is `overlay-agent run` running on this node?)")]
    NotRunning(SocketAddr),
    /// The exchange failed.
    #[error("talking to the agent on {addr}")]
    Io {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The answer is not HTTP.
    #[error("the agent on {0} sent a malformed response")]
    Malformed(SocketAddr),
}

/// Sends `method path` to `addr` and returns the status code and body.
pub fn call(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), ClientError> {
    let io = |source| ClientError::Io { addr, source };
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ClientError::NotRunning(addr));
        }
        Err(e) => return Err(io(e)),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    s.take(16 * 1024 * 1024).read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8(raw).map_err(|_| ClientError::Malformed(addr))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(ClientError::Malformed(addr))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(ClientError::Malformed(addr))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_garbage_does_not() {
        assert_eq!(
            parse_head(b"GET /status?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(Request {
                method: "GET".into(),
                path: "/status".into()
            })
        );
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET status HTTP/1.1\r\n\r\n",
            b"GET / SPDY\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_client_and_server_talk_and_bad_requests_get_400() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(|r: Request| {
            Box::pin(async move {
                match (r.method.as_str(), r.path.as_str()) {
                    ("GET", "/healthz") => Response::text(200, "ok\n"),
                    _ => Response::text(404, "no\n"),
                }
            })
        });
        let (_tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, handler, rx));
        let (code, body) = tokio::task::spawn_blocking(move || call(addr, "GET", "/healthz"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        let (code, _) = tokio::task::spawn_blocking(move || call(addr, "GET", "/nope"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 404);
        let raw = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"garbage\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    }
}
