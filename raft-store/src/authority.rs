//! Lenient `:authority` for the gRPC listeners: etcd's Go client (etcdctl 3.4 and every client
//! library built on clientv3 3.4) sends the endpoint's whole URL as the HTTP/2 `:authority`
//! (`http://127.0.0.1:2379`) when it is given `http://` endpoints, which `--cluster` always
//! does. etcd's server ignores it; the HTTP/2 server under tonic (`h2`) resets such a stream
//! with PROTOCOL_ERROR. [`LenientAuthority`] sits between the socket and the HTTP/2 server and
//! rewrites what the client sends before the server reads it:
//!
//! - A gRPC client names one authority for all the requests of a connection, so the first
//!   header block decides (decoded with `loona-hpack`): if its `:authority` is valid (or
//!   absent), the rest of the connection passes through untouched, byte for byte, without
//!   being parsed any further.
//! - Otherwise every header block of the connection is decoded (following the client's
//!   compression state) and encoded again as literals that do not touch the server's dynamic
//!   table, with `:authority` replaced by the URL's `host:port` (or dropped when it names no
//!   host), so the server's view of the compression state never depends on what it did not
//!   see.
//! - Everything else (DATA, SETTINGS, PING, …) passes through untouched, and nothing on the way
//!   back to the client is touched.
//!
//! Input the wrapper cannot make sense of (not HTTP/2, or a header block that does not decode)
//! is passed on as it came, for the HTTP/2 server to refuse as it would have.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer must accept.
const MIN_MAX_FRAME: usize = 16_384;
/// A header block larger than this is not buffered (h2 refuses far smaller ones).
const MAX_BLOCK: usize = 1 << 20;

#[derive(Debug)]
enum State {
    /// Expecting the client's connection preface.
    Preface,
    /// Expecting a frame header.
    Frame,
    /// Passing `remaining` bytes of a frame's payload through.
    Through { remaining: usize },
    /// Not parsing any more: everything passes through.
    Raw,
}

/// A header block being collected from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, to pass on unchanged.
    raw: Vec<u8>,
}

/// An accepted connection whose requests' `:authority` is made acceptable to the HTTP/2 server.
pub struct LenientAuthority<S> {
    inner: S,
    state: State,
    /// Received, not yet processed.
    pending: BytesMut,
    /// Processed, not yet read by the server.
    out: BytesMut,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    /// Whether header blocks are encoded again (see the module comment).
    rewriting: bool,
    eof: bool,
}

impl<S> LenientAuthority<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: State::Preface,
            pending: BytesMut::new(),
            out: BytesMut::new(),
            block: None,
            decoder: loona_hpack::Decoder::new(),
            rewriting: false,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Gives up parsing: what is buffered and everything after passes through as it came.
    fn go_raw(&mut self) {
        if let Some(b) = self.block.take() {
            self.out.extend_from_slice(&b.raw);
        }
        self.out.extend_from_slice(&self.pending);
        self.pending.clear();
        self.state = State::Raw;
    }

    /// Moves as much of `pending` to `out` as can be decided now.
    fn process(&mut self) {
        loop {
            match self.state {
                State::Raw => {
                    self.out.extend_from_slice(&self.pending);
                    self.pending.clear();
                    return;
                }
                State::Preface => {
                    let n = self.pending.len().min(PREFACE.len());
                    if self.pending[..n] != PREFACE[..n] {
                        return self.go_raw();
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.out.extend_from_slice(&self.pending.split_to(n));
                    self.state = State::Frame;
                }
                State::Through { remaining } => {
                    let n = remaining.min(self.pending.len());
                    if n == 0 {
                        return;
                    }
                    self.out.extend_from_slice(&self.pending.split_to(n));
                    self.state = if n == remaining {
                        State::Frame
                    } else {
                        State::Through {
                            remaining: remaining - n,
                        }
                    };
                }
                State::Frame => {
                    if self.pending.len() < FRAME_HEADER {
                        return;
                    }
                    let h = &self.pending[..FRAME_HEADER];
                    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let (kind, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let header_frame = kind == HEADERS || kind == CONTINUATION;
                    if self.block.is_some() != (kind == CONTINUATION) {
                        // CONTINUATION without HEADERS, or a block interrupted: a protocol
                        // error the server will report.
                        return self.go_raw();
                    }
                    if !header_frame {
                        self.out
                            .extend_from_slice(&self.pending.split_to(FRAME_HEADER));
                        if len > 0 {
                            self.state = State::Through { remaining: len };
                        }
                        continue;
                    }
                    if len > MAX_BLOCK {
                        return self.go_raw();
                    }
                    if self.pending.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame = self.pending.split_to(FRAME_HEADER + len);
                    if !self.collect(kind, flags, stream, &frame) {
                        // Everything of the block so far, this frame included, as it came.
                        let raw = match self.block.take() {
                            Some(b) if b.raw.ends_with(&frame) => b.raw,
                            Some(mut b) => {
                                b.raw.extend_from_slice(&frame);
                                b.raw
                            }
                            None => frame.to_vec(),
                        };
                        self.out.extend_from_slice(&raw);
                        return self.go_raw();
                    }
                }
            }
        }
    }

    /// Adds a HEADERS or CONTINUATION frame to the block; finishes the block at END_HEADERS.
    /// False when the frame makes no sense (the caller passes it on raw).
    fn collect(&mut self, kind: u8, flags: u8, stream: u32, frame: &[u8]) -> bool {
        let payload = &frame[FRAME_HEADER..];
        if kind == HEADERS {
            let mut start = 0;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let Some(&p) = payload.first() else {
                    return false;
                };
                pad = usize::from(p);
                start = 1;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let Some(p) = payload.get(start..start + 5) else {
                    return false;
                };
                priority = Some([p[0], p[1], p[2], p[3], p[4]]);
                start += 5;
            }
            let Some(fragment) = payload
                .len()
                .checked_sub(pad)
                .and_then(|end| payload.get(start..end))
            else {
                return false;
            };
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: fragment.to_vec(),
                raw: frame.to_vec(),
            });
        } else {
            let Some(block) = self.block.as_mut() else {
                return false;
            };
            if block.stream != stream || block.fragment.len() + payload.len() > MAX_BLOCK {
                return false;
            }
            block.fragment.extend_from_slice(payload);
            block.raw.extend_from_slice(frame);
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                return self.finish(block);
            }
        }
        true
    }

    /// Decodes a whole header block and passes it on, as it came or encoded again.
    fn finish(&mut self, block: Block) -> bool {
        let headers = match self.decoder.decode(&block.fragment) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%e, "undecodable header block passed on as received");
                self.block = Some(block);
                return false;
            }
        };
        let authority = headers.iter().find(|(n, _)| n == b":authority");
        let acceptable = authority.is_none_or(|(_, v)| valid_authority(v));
        if acceptable && !self.rewriting {
            // The connection's authority is fine: nothing more to look at.
            self.out.extend_from_slice(&block.raw);
            self.state = State::Raw;
            return true;
        }
        if !self.rewriting {
            tracing::debug!(
                authority = %String::from_utf8_lossy(authority.map_or(&[][..], |(_, v)| v)),
                "rewriting the :authority a client sent"
            );
        }
        self.rewriting = true;
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        for (name, value) in &headers {
            if name == b":authority" && !valid_authority(value) {
                match authority_of_url(value) {
                    Some(fixed) => literal(&mut encoded, name, fixed.as_bytes()),
                    None => continue,
                }
            } else {
                literal(&mut encoded, name, value);
            }
        }
        self.frames(&block, &encoded);
        true
    }

    /// Writes `encoded` as a HEADERS frame and as many CONTINUATION frames as it needs.
    fn frames(&mut self, block: &Block, encoded: &[u8]) {
        let prio_len = if block.priority.is_some() { 5 } else { 0 };
        let first_room = MIN_MAX_FRAME - prio_len;
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = 0;
        if block.end_stream {
            flags |= END_STREAM;
        }
        if block.priority.is_some() {
            flags |= PRIORITY;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        frame_header(
            &mut self.out,
            prio_len + first.len(),
            HEADERS,
            flags,
            block.stream,
        );
        if let Some(p) = block.priority {
            self.out.extend_from_slice(&p);
        }
        self.out.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(MIN_MAX_FRAME));
            let flags = if after.is_empty() { END_HEADERS } else { 0 };
            frame_header(
                &mut self.out,
                chunk.len(),
                CONTINUATION,
                flags,
                block.stream,
            );
            self.out.extend_from_slice(chunk);
            rest = after;
        }
    }
}

fn frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// What the HTTP/2 server accepts as `:authority`.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// The `host[:port]` of a URL such as `http://127.0.0.1:2379` (or `https://…/path`).
fn authority_of_url(value: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(value).ok()?;
    let (_, rest) = s.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    (!host.is_empty() && valid_authority(host.as_bytes())).then(|| host.to_string())
}

/// HPACK integer with an `n`-bit prefix whose other bits are `first` (RFC 7541, 5.1).
fn integer(out: &mut Vec<u8>, value: usize, n: u8, first: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A literal header field without indexing, new name, no Huffman coding (RFC 7541, 6.2.2).
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    integer(out, name.len(), 7, 0);
    out.extend_from_slice(name);
    integer(out, value.len(), 7, 0);
    out.extend_from_slice(value);
}

impl<S: AsyncRead + Unpin> AsyncRead for LenientAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.pending.is_empty() {
                // Payloads and unparsed connections go straight to the reader.
                let limit = match this.state {
                    State::Raw => Some(buf.remaining()),
                    State::Through { remaining } => Some(remaining.min(buf.remaining())),
                    _ => None,
                };
                if let Some(limit) = limit.filter(|l| *l > 0) {
                    let dst = buf.initialize_unfilled_to(limit);
                    let mut direct = ReadBuf::new(dst);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut direct) {
                        Poll::Ready(Ok(())) => {
                            let n = direct.filled().len();
                            buf.advance(n);
                            if let State::Through { remaining } = this.state {
                                this.state = if n == remaining {
                                    State::Frame
                                } else {
                                    State::Through {
                                        remaining: remaining - n,
                                    }
                                };
                            }
                            return Poll::Ready(Ok(()));
                        }
                        other => return other,
                    }
                }
            }
            this.process();
            if !this.out.is_empty() {
                continue;
            }
            if this.eof {
                // A truncated frame: pass on what there is, then the end.
                this.go_raw();
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.pending.extend_from_slice(rb.filled());
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LenientAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for LenientAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn encode_block(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        enc.encode(headers.iter().copied())
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    /// Feeds `input` through the wrapper in chunks of `chunk` bytes, the client's side kept
    /// open, and reads until `done` says the output is complete (or fails after 5 s): a frame
    /// must come out as soon as it is in, not when the connection ends.
    async fn through(input: &[u8], chunk: usize, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1 << 20);
        for c in input.chunks(chunk) {
            client.write_all(c).await.unwrap();
        }
        let mut wrapped = LenientAuthority::new(server);
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done(&out) {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout_at(deadline, wrapped.read(&mut buf))
                .await
                .expect("the wrapper held back complete frames")
                .unwrap();
            assert_ne!(n, 0, "the wrapper ended the stream early");
            out.extend_from_slice(&buf[..n]);
        }
        drop(client);
        out
    }

    async fn all_of(input: &[u8], chunk: usize) -> Vec<u8> {
        let len = input.len();
        through(input, chunk, move |out| out.len() >= len).await
    }

    /// Splits HTTP/2 client bytes back into the header blocks they carry, decoded.
    fn blocks(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        if bytes.len() < PREFACE.len() {
            return Vec::new();
        }
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut out = Vec::new();
        let mut fragment = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let Some(payload) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
                break;
            };
            if kind == HEADERS || kind == CONTINUATION {
                let skip = if kind == HEADERS && flags & PRIORITY != 0 {
                    5
                } else {
                    0
                };
                fragment.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    out.push(decoder.decode(&fragment).expect("an output block decodes"));
                    fragment.clear();
                }
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        out
    }

    fn request(authority: &[u8], path: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":authority", authority.to_vec()),
            (b":path", path.to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
        ]
    }

    #[tokio::test]
    async fn valid_authorities_pass_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
        input.extend(frame(0x4, 0x1, 0, &[])); // SETTINGS ACK, empty
        for (i, path) in [&b"/a"[..], b"/b"].iter().enumerate() {
            let headers = request(b"127.0.0.1:2379", path);
            let block = enc.encode(headers.iter().map(|(n, v)| (*n, v.as_slice())));
            input.extend(frame(HEADERS, END_HEADERS, 1 + 2 * i as u32, &block));
            input.extend(frame(0x0, END_STREAM, 1 + 2 * i as u32, b"payload"));
        }
        for chunk in [1, 7, 4096] {
            assert_eq!(all_of(&input, chunk).await, input, "chunks of {chunk}");
        }
    }

    #[tokio::test]
    async fn a_url_authority_becomes_host_and_port_and_later_blocks_stay_readable() {
        // The client indexes everything, so the second request refers to the first's fields.
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        let paths: [&[u8]; 3] = [b"/etcdserverpb.Maintenance/Status", b"/x", b"/y"];
        let authorities: [&[u8]; 3] = [
            b"http://127.0.0.1:2379",
            b"127.0.0.1:2379",
            b"http://127.0.0.1:2379",
        ];
        for (i, (path, authority)) in paths.iter().zip(authorities).enumerate() {
            let headers = request(authority, path);
            let block = enc.encode(headers.iter().map(|(n, v)| (*n, v.as_slice())));
            // The last block comes split over a CONTINUATION frame, with padding and priority.
            if i == 2 {
                let (a, b) = block.split_at(block.len() / 2);
                let mut payload = vec![3u8];
                payload.extend_from_slice(&[0, 0, 0, 0, 16]);
                payload.extend_from_slice(a);
                payload.extend_from_slice(&[0, 0, 0]);
                input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &payload));
                input.extend(frame(CONTINUATION, END_HEADERS, 5, b));
            } else {
                input.extend(frame(HEADERS, END_HEADERS, 1 + 2 * i as u32, &block));
            }
        }
        for chunk in [1, 5, 4096] {
            let got = blocks(&through(&input, chunk, |out| blocks(out).len() == 3).await);
            assert_eq!(got.len(), 3);
            for (i, block) in got.iter().enumerate() {
                let find = |n: &[u8]| block.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                assert_eq!(
                    find(b":authority").as_deref(),
                    Some(&b"127.0.0.1:2379"[..]),
                    "block {i}"
                );
                assert_eq!(find(b":path").as_deref(), Some(paths[i]), "block {i}");
                assert_eq!(
                    find(b"content-type").as_deref(),
                    Some(&b"application/grpc"[..])
                );
            }
        }
    }

    #[tokio::test]
    async fn garbage_passes_through_unchanged() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(all_of(&input, 3).await, input);
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
        bad.extend(frame(0x0, 0, 1, b"after"));
        assert_eq!(all_of(&bad, 2).await, bad);
    }

    #[test]
    fn authorities_of_urls() {
        assert_eq!(
            authority_of_url(b"http://127.0.0.1:2379").as_deref(),
            Some("127.0.0.1:2379")
        );
        assert_eq!(
            authority_of_url(b"https://u@h.example:1/p?q").as_deref(),
            Some("h.example:1")
        );
        assert_eq!(authority_of_url(b"unix:///tmp/sock"), None);
        assert_eq!(authority_of_url(b"#initially=[http://a:1]"), None);
        assert!(!valid_authority(b"http://127.0.0.1:2379"));
        assert!(valid_authority(b"[::1]:2379"));
    }

    #[test]
    fn hpack_integers_follow_the_rfc_examples() {
        let mut out = Vec::new();
        integer(&mut out, 10, 5, 0);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        integer(&mut out, 42, 8, 0);
        assert_eq!(out, [42]);
        let _ = encode_block(&[]);
    }
}
