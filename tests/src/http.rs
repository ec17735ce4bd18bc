//! A plain HTTP/1.0 GET for tests that reach pods and node ports: the body, or None when
//! nothing answers within two seconds (callers retry under their own deadline).

use std::time::Duration;

/// The body of an HTTP GET of `/` at `addr` (`ip:port`), or None if nothing answers.
pub async fn get(addr: &str) -> Option<String> {
    get_path(addr, "/").await
}

/// The body of an HTTP GET of `path` at `addr`, or None if nothing answers.
pub async fn get_path(addr: &str, path: &str) -> Option<String> {
    response(addr, path).await.map(|(_, body)| body)
}

/// The status code and body of an HTTP GET of `path` at `addr`, or None if nothing answers.
pub async fn response(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(addr);
    let mut s = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    // The blank line after the headers; a CGI script's own ends in a bare LF.
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\r\n\n"))
        .or_else(|| text.split_once("\n\n"))?;
    let status = head
        .strip_prefix("HTTP/1.")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, body.to_string()))
}
