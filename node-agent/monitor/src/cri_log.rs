//! Container logs in the CRI format the kubelet reads: one record per line,
//! `<RFC 3339 time with nanoseconds> <stdout|stderr> <F|P> <content>`; a line longer than
//! 16 KiB is cut into `P` (partial) records ending with an `F` (full) one. The splitting and the
//! formatting are pure; [`pump`] copies one stream of a container into the shared log file.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// Longest content of one record, as containerd cuts lines.
pub const MAX_RECORD: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// The record ends a line.
    Full,
    /// The line goes on in the next record.
    Partial,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Full => "F",
            Tag::Partial => "P",
        }
    }
}

/// Cuts a byte stream into records: whole lines (without their `\n`) and 16 KiB pieces of
/// longer ones.
#[derive(Debug, Default)]
pub struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// Takes `data`, returns the records it completes.
    pub fn push(&mut self, data: &[u8]) -> Vec<(Tag, Vec<u8>)> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                out.push((Tag::Full, std::mem::take(&mut self.pending)));
            } else {
                self.pending.push(b);
                if self.pending.len() == MAX_RECORD {
                    out.push((Tag::Partial, std::mem::take(&mut self.pending)));
                }
            }
        }
        out
    }

    /// At the end of the stream: what is left, as a last full record.
    pub fn finish(&mut self) -> Option<(Tag, Vec<u8>)> {
        if self.pending.is_empty() {
            None
        } else {
            Some((Tag::Full, std::mem::take(&mut self.pending)))
        }
    }
}

/// A time as CRI logs write it: UTC, nine fractional digits.
pub fn timestamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// One record, with its newline.
pub fn format_record(t: Timestamp, stream: Stream, tag: Tag, content: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(content.len() + 48);
    line.extend_from_slice(timestamp(t).as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.as_str().as_bytes());
    line.push(b' ');
    line.extend_from_slice(tag.as_str().as_bytes());
    line.push(b' ');
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub time: Timestamp,
    pub stream: Stream,
    pub tag: Tag,
    pub content: String,
}

/// Parses one line of a CRI log (without its newline).
pub fn parse_record(line: &str) -> Option<Record> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?.parse::<Timestamp>().ok()?;
    let stream = match parts.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = match parts.next()? {
        "F" => Tag::Full,
        "P" => Tag::Partial,
        _ => return None,
    };
    let content = parts.next().unwrap_or("").to_string();
    Some(Record {
        time,
        stream,
        tag,
        content,
    })
}

/// Copies `reader` (a container's stdout or stderr) into `sink` as CRI records until end of
/// file; each record is written whole under the lock, so the two streams interleave by line.
pub fn pump<R: Read, W: Write>(
    mut reader: R,
    stream: Stream,
    sink: Arc<Mutex<W>>,
) -> std::io::Result<()> {
    let mut splitter = Splitter::default();
    let mut buf = vec![0u8; 32 * 1024];
    let write = |records: Vec<(Tag, Vec<u8>)>| -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let mut bytes = Vec::new();
        for (tag, content) in records {
            bytes.extend(format_record(now, stream, tag, &content));
        }
        let mut sink = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sink.write_all(&bytes)?;
        sink.flush()
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        write(splitter.push(&buf[..n]))?;
    }
    write(splitter.finish().into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input chunks, records as (tag, length), the length of what `finish` leaves)
    type Case = (Vec<Vec<u8>>, Vec<(Tag, usize)>, Option<usize>);

    #[test]
    fn splits_lines_and_long_lines() {
        let long = vec![b'x'; MAX_RECORD * 2 + 5];
        let mut long_input = long.clone();
        long_input.push(b'\n');
        let cases: Vec<Case> = vec![
            (
                vec![b"a\nbb\n".to_vec()],
                vec![(Tag::Full, 1), (Tag::Full, 2)],
                None,
            ),
            (
                vec![b"ab".to_vec(), b"c\nd".to_vec()],
                vec![(Tag::Full, 3)],
                Some(1),
            ),
            (vec![b"\n".to_vec()], vec![(Tag::Full, 0)], None),
            (
                vec![long_input],
                vec![
                    (Tag::Partial, MAX_RECORD),
                    (Tag::Partial, MAX_RECORD),
                    (Tag::Full, 5),
                ],
                None,
            ),
            (
                vec![vec![b'y'; MAX_RECORD]],
                vec![(Tag::Partial, MAX_RECORD)],
                None,
            ),
        ];
        for (chunks, want, rest) in cases {
            let mut s = Splitter::default();
            let got: Vec<(Tag, usize)> = chunks
                .iter()
                .flat_map(|c| s.push(c))
                .map(|(t, c)| (t, c.len()))
                .collect();
            assert_eq!(got, want);
            assert_eq!(
                s.finish().map(|(t, c)| (t, c.len())),
                rest.map(|n| (Tag::Full, n))
            );
        }
    }

    #[test]
    fn formats_and_parses_records() {
        let t: Timestamp = "2026-12-04T10:00:00.123456789Z".parse().unwrap();
        let line = format_record(t, Stream::Stderr, Tag::Partial, b"hello world");
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "2026-12-04T10:00:00.123456789Z stderr P hello world\n"
        );
        let t0: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        assert_eq!(timestamp(t0), "2026-12-04T10:00:00.000000000Z");
        let text = String::from_utf8(line).unwrap();
        let rec = parse_record(text.trim_end_matches('\n')).unwrap();
        assert_eq!(
            rec,
            Record {
                time: t,
                stream: Stream::Stderr,
                tag: Tag::Partial,
                content: "hello world".into()
            }
        );
        assert_eq!(parse_record("2026-12-04T10:00:00Z stdin F x"), None);
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn pump_writes_records() {
        let sink = Arc::new(Mutex::new(Vec::<u8>::new()));
        pump(&b"one\ntwo"[..], Stream::Stdout, sink.clone()).unwrap();
        let text = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        let records: Vec<Record> = text.lines().filter_map(parse_record).collect();
        let got: Vec<(&str, Tag)> = records
            .iter()
            .map(|r| (r.content.as_str(), r.tag))
            .collect();
        assert_eq!(got, vec![("one", Tag::Full), ("two", Tag::Full)]);
    }
}
