//! The push path's client to a plain-`http` Pushgateway: a minimal keep-alive HTTP/1.1 client
//! over pooled `TcpStream`s, run inside the request's own task (no separate connection task, so
//! no wake-up of another thread between the request and its forward), one vectored write per
//! request, and the answer read with `httparse` (the head parser hyper uses).
//!
//! `https` shards keep the general-purpose client of [`crate::forward`].

use std::io::{self, ErrorKind, IoSlice};
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most idle connections kept per shard.
const MAX_IDLE: usize = 256;
/// Largest answer head read.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest answer body kept (the rest of a larger one is not read; the connection is closed).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A Pushgateway's answer: status and body (at most [`MAX_ANSWER_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Its status.
    pub status: u16,
    /// Its body.
    pub body: Vec<u8>,
}

/// One plain-`http` Pushgateway: where to connect, the `Host` header, the URL's path prefix,
/// and the idle connections.
#[derive(Debug)]
pub(crate) struct Upstream {
    addr: String,
    host: String,
    prefix: String,
    idle: Mutex<Vec<TcpStream>>,
}

impl Upstream {
    /// The client for `url` (`http://host[:port][/prefix]`); `None` for any other scheme.
    pub(crate) fn new(url: &reqwest::Url) -> Option<Self> {
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Some(Self {
            // `host_str` keeps an IPv6 address in brackets, as `host:port` needs it.
            addr: format!("{host}:{port}"),
            host: host_header,
            prefix: url.path().trim_end_matches('/').to_string(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `method path` with `body` and reads the answer. A kept-alive connection that the
    /// Pushgateway closed meanwhile (no answer byte read) is replaced by a new one, once: the
    /// request never reached it, and PUT and DELETE are idempotent anyway.
    pub(crate) async fn request(&self, method: &str, path: &str, body: &[u8]) -> io::Result<Reply> {
        let head = self.head(method, path, body.len());
        let (mut stream, reused) = self.checkout().await?;
        let first = async {
            write_all_vectored(&mut stream, &head, body).await?;
            read_reply(&mut stream).await
        }
        .await;
        match first {
            Ok((reply, keep)) => {
                self.checkin(stream, keep);
                Ok(reply)
            }
            Err(Failure::BeforeAnswer(_)) if reused => {
                let mut stream = self.connect().await?;
                write_all_vectored(&mut stream, &head, body).await?;
                let (reply, keep) = read_reply(&mut stream).await.map_err(Failure::into_io)?;
                self.checkin(stream, keep);
                Ok(reply)
            }
            Err(e) => Err(e.into_io()),
        }
    }

    fn head(&self, method: &str, path: &str, length: usize) -> Vec<u8> {
        format!(
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\n\
             content-type: text/plain; version=0.0.4; charset=utf-8\r\n\
             content-length: {length}\r\n\r\n",
            self.prefix, self.host
        )
        .into_bytes()
    }

    async fn checkout(&self) -> io::Result<(TcpStream, bool)> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(s) => Ok((s, true)),
            None => Ok((self.connect().await?, false)),
        }
    }

    async fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn checkin(&self, stream: TcpStream, keep: bool) {
        if !keep {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(stream);
        }
    }
}

/// Why an exchange failed: before any byte of the answer (a closed kept-alive connection is
/// retried) or after.
#[derive(Debug)]
enum Failure {
    BeforeAnswer(io::Error),
    During(io::Error),
}

impl Failure {
    fn into_io(self) -> io::Error {
        match self {
            Self::BeforeAnswer(e) | Self::During(e) => e,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::BeforeAnswer(e)
    }
}

async fn write_all_vectored(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let total = head.len() + body.len();
    let mut written = 0usize;
    while written < total {
        let n = if written < head.len() {
            stream
                .write_vectored(&[IoSlice::new(&head[written..]), IoSlice::new(body)])
                .await?
        } else {
            stream.write(&body[written - head.len()..]).await?
        };
        if n == 0 {
            return Err(io::Error::new(ErrorKind::WriteZero, "connection closed"));
        }
        written += n;
    }
    Ok(())
}

/// Reads one answer: its status, its body, and whether the connection may be reused.
async fn read_reply(stream: &mut TcpStream) -> Result<(Reply, bool), Failure> {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    // Set when `buf` already holds bytes after an interim answer: parse them before reading.
    let mut parse_first = false;
    let (status, head_len, framing, mut keep) = loop {
        if !std::mem::take(&mut parse_first) {
            let n = if buf.is_empty() {
                stream
                    .read(&mut chunk)
                    .await
                    .map_err(Failure::BeforeAnswer)?
            } else {
                stream.read(&mut chunk).await.map_err(Failure::During)?
            };
            if n == 0 {
                let e = io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed before an answer",
                );
                return Err(if buf.is_empty() {
                    Failure::BeforeAnswer(e)
                } else {
                    Failure::During(e)
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = response.code.unwrap_or(502);
                if (100..200).contains(&status) {
                    // An interim answer (we never send `Expect`): skip it.
                    buf.drain(..head_len);
                    parse_first = !buf.is_empty();
                    continue;
                }
                let mut framing = Framing::UntilClose;
                let mut keep = response.version == Some(1);
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let n = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .ok_or_else(|| Failure::During(invalid("bad Content-Length")))?;
                        framing = Framing::Length(n);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        framing = Framing::Chunked;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        if v.contains("close") {
                            keep = false;
                        }
                    }
                }
                if status == 204 || status == 304 {
                    framing = Framing::Length(0);
                }
                break (status, head_len, framing, keep);
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => {
                return Err(Failure::During(invalid("answer head too large")));
            }
            Err(e) => return Err(Failure::During(invalid(&format!("bad answer: {e}")))),
        }
    };
    buf.drain(..head_len);
    let body = match framing {
        Framing::Length(n) => {
            let want = n.min(MAX_ANSWER_BYTES);
            read_at_least(stream, &mut buf, want).await?;
            if n > MAX_ANSWER_BYTES || buf.len() > n {
                keep = false;
            }
            buf.truncate(want);
            buf
        }
        Framing::Chunked => {
            let (body, complete) = read_chunked(stream, buf).await?;
            keep &= complete;
            body
        }
        Framing::UntilClose => {
            keep = false;
            while buf.len() < MAX_ANSWER_BYTES {
                let n = stream.read(&mut chunk).await.map_err(Failure::During)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.truncate(MAX_ANSWER_BYTES);
            buf
        }
    };
    Ok((Reply { status, body }, keep))
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message.to_string())
}

/// Reads until `buf` holds at least `n` bytes.
async fn read_at_least(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Result<(), Failure> {
    let mut chunk = [0u8; 4096];
    while buf.len() < n {
        let got = stream.read(&mut chunk).await.map_err(Failure::During)?;
        if got == 0 {
            return Err(Failure::During(io::Error::new(
                ErrorKind::UnexpectedEof,
                "answer body cut short",
            )));
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(())
}

/// Decodes a chunked body that starts in `raw`; the body (at most [`MAX_ANSWER_BYTES`]) and
/// whether it was read to its end (else the connection is not reused).
async fn read_chunked(
    stream: &mut TcpStream,
    mut raw: Vec<u8>,
) -> Result<(Vec<u8>, bool), Failure> {
    let mut body = Vec::new();
    loop {
        // The size line.
        let line_end = loop {
            if let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if raw.len() > MAX_HEAD_BYTES {
                return Err(Failure::During(invalid("bad chunk size line")));
            }
            let have = raw.len();
            read_at_least(stream, &mut raw, have + 1).await?;
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_text, 16)
            .map_err(|_| Failure::During(invalid("bad chunk size")))?;
        raw.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
                    let empty = i == 0;
                    raw.drain(..i + 2);
                    if empty {
                        return Ok((body, raw.is_empty()));
                    }
                } else {
                    if raw.len() > MAX_HEAD_BYTES {
                        return Err(Failure::During(invalid("bad chunk trailer")));
                    }
                    let have = raw.len();
                    read_at_least(stream, &mut raw, have + 1).await?;
                }
            }
        }
        if body.len() + size > MAX_ANSWER_BYTES {
            let room = MAX_ANSWER_BYTES - body.len();
            read_at_least(stream, &mut raw, room.min(size)).await?;
            body.extend_from_slice(&raw[..room.min(size)]);
            return Ok((body, false));
        }
        read_at_least(stream, &mut raw, size + 2).await?;
        body.extend_from_slice(&raw[..size]);
        raw.drain(..size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection server that answers each request with `answers[i]` verbatim after
    /// reading its head and `Content-Length` body; returns what it received.
    async fn serve(answers: Vec<&'static [u8]>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            let mut buf = Vec::new();
            for answer in answers {
                loop {
                    let mut headers = [httparse::EMPTY_HEADER; 16];
                    let mut req = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                        let len: usize = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                            .unwrap_or(0);
                        if buf.len() >= n + len {
                            all.extend(buf.drain(..n + len));
                            break;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    let got = s.read(&mut chunk).await.unwrap_or(0);
                    if got == 0 {
                        all.append(&mut buf);
                        return all;
                    }
                    buf.extend_from_slice(&chunk[..got]);
                }
                s.write_all(answer).await.unwrap();
            }
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            all.extend(rest);
            all
        });
        (url, task)
    }

    fn upstream(url: &str) -> Upstream {
        Upstream::new(&reqwest::Url::parse(url).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_cut_to_it_and_its_connection_not_kept() {
        // A 1 MB answer body (Content-Length), then a second request on a new connection.
        let big: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n{}",
                1 << 20,
                "e".repeat(1 << 20)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let (url, _server) = serve(vec![big]).await;
        let up = upstream(&url);
        let reply = up.request("PUT", "/metrics/job/x", b"a 1\n").await.unwrap();
        assert_eq!(reply.status, 500);
        assert_eq!(reply.body.len(), MAX_ANSWER_BYTES);
        assert!(
            up.idle.lock().unwrap().is_empty(),
            "the half-read connection is not pooled"
        );
    }

    #[tokio::test]
    async fn a_connection_is_reused_and_the_url_prefix_kept() {
        let (url, server) = serve(vec![
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nbad\n",
        ])
        .await;
        let up = upstream(&format!("{url}/prefix/"));
        let reply = up.request("PUT", "/metrics/job/x", b"a 1\n").await.unwrap();
        assert_eq!(reply.status, 202);
        let reply = up.request("DELETE", "/metrics/job/y", b"").await.unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (400, &b"bad\n"[..]));
        drop(up);
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            seen.starts_with("PUT /prefix/metrics/job/x HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(
            seen.contains("content-length: 4\r\n\r\na 1\nDELETE /prefix/metrics/job/y"),
            "{seen}"
        );
    }

    #[tokio::test]
    async fn an_interim_answer_arriving_with_the_final_one_is_skipped() {
        let (url, _server) = serve(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let reply = upstream(&url).request("PUT", "/m", b"x").await.unwrap();
        assert_eq!(reply.status, 202);
    }

    #[test]
    fn only_plain_http_urls_get_the_lean_client_and_ipv6_keeps_its_brackets() {
        let up = |u: &str| Upstream::new(&reqwest::Url::parse(u).unwrap());
        assert!(up("https://pgw:9091").is_none());
        let v6 = up("http://[::1]:9091/prefix").unwrap();
        assert_eq!(
            (v6.addr.as_str(), v6.prefix.as_str()),
            ("[::1]:9091", "/prefix")
        );
        let plain = up("http://pgw").unwrap();
        assert_eq!(
            (plain.addr.as_str(), plain.host.as_str()),
            ("pgw:80", "pgw")
        );
    }

    #[tokio::test]
    async fn a_kept_alive_connection_the_server_closed_is_replaced_once() {
        // Every connection gets one answer and is then closed by the server.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut served = 0;
            while served < 3 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Each request here is a 1-byte body after the head.
                while !buf.windows(5).any(|w| w == b"\r\n\r\nx") {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                if buf.windows(5).any(|w| w == b"\r\n\r\nx") {
                    s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    served += 1;
                }
            }
            served
        });
        let up = upstream(&url);
        assert_eq!(up.request("PUT", "/a", b"x").await.unwrap().status, 202);
        // The pooled connection is closed by now (or soon): the request goes to a new one.
        assert_eq!(up.request("PUT", "/b", b"x").await.unwrap().status, 202);
        assert_eq!(up.request("PUT", "/c", b"x").await.unwrap().status, 202);
        assert_eq!(server.await.unwrap(), 3);
    }

    #[tokio::test]
    async fn chunked_answers_are_decoded() {
        let (url, _server) = serve(vec![
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        let reply = upstream(&url).request("PUT", "/m", b"x").await.unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (500, &b"abcde"[..]));
    }
}
