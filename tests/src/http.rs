//! A plain HTTP/1.0 GET for tests that reach pods and node ports: the body, or None when
//! nothing answers within two seconds (callers retry under their own deadline).

use std::time::Duration;

/// The body of an HTTP GET of `/` at `addr` (`ip:port`), or None if nothing answers.
pub async fn get(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(addr);
    let mut s = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1").then(|| body.to_string())
}
