//! The lab's HTTP client: bounded HTTP/1.0 GETs and POSTs, and HTTP/1.1 POSTs on a kept-alive
//! connection, nothing more (a status code or no answer).
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

/// One HTTP answer (or none) and when it came.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: Option<u16>,
    pub at: Instant,
}

/// A bounded HTTP/1.0 GET; the status code, or None when the connection failed or timed out.
#[must_use]
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<u16> {
    http_request(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: lab\r\n\r\n"),
        timeout,
    )
}

/// A bounded HTTP/1.0 POST of a small form body (nginx does not retry it on another upstream
/// connection once sent); the status code, or None.
#[must_use]
pub fn http_post(port: u16, path: &str, timeout: Duration) -> Option<u16> {
    let body = "order=42";
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: lab\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_request(port, &req, timeout)
}

fn http_request(port: u16, request: &str, timeout: Duration) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// The small form POST of [`http_post`] in HTTP/1.1 on a kept-alive client connection to
/// nginx, written only (the answer is read by [`read_answer`]).
pub fn write_post_keepalive(s: &mut TcpStream, path: &str) -> std::io::Result<()> {
    let body = "order=42";
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: lab\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
}

/// Reads one whole answer (head, then a `Content-Length` body) from a kept-alive connection,
/// so the next request can follow on it; its status, or None.
pub fn read_answer(s: &mut TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while got.len() < head_end + length {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    head.split_whitespace().nth(1)?.parse().ok()
}
