//! The pure core of reading a container's log back: the bytes of a CRI log file (fed in pieces
//! of any size, as they are read or as the file grows) become the lines the container wrote —
//! partial records joined per stream, lines that are not CRI records skipped — and then the
//! request's `since`, `tail`, timestamps and byte limit are applied, as `kubectl logs` shows
//! them. No I/O here: `logs` feeds it.

use std::collections::VecDeque;

use jiff::Timestamp;

use crate::runtime::cri_log::{parse_record, Stream, Tag};

/// One line of output: the time of its first record, its stream, its bytes (without the
/// newline), and whether it ended (false for the last line of a file that stopped inside it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub time: Timestamp,
    pub stream: Stream,
    pub text: Vec<u8>,
    pub complete: bool,
}

/// Cuts file bytes into CRI records and joins records into lines.
#[derive(Debug, Default)]
pub struct Lines {
    /// The bytes of a record whose newline has not been read yet.
    pending: Vec<u8>,
    /// A line of each stream begun by partial records: [stdout, stderr].
    open: [Option<Line>; 2],
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Lines {
    /// Takes the next bytes of the file; returns the lines they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..at]);
            let record = std::mem::take(&mut self.pending);
            self.record(&record, &mut out);
            rest = &rest[at + 1..];
        }
        self.pending.extend_from_slice(rest);
        out
    }

    /// The file will not grow: a last record without its newline counts, and lines left open
    /// by partial records come out incomplete (oldest first).
    pub fn finish(&mut self) -> Vec<Line> {
        let mut out = Vec::new();
        let record = std::mem::take(&mut self.pending);
        if !record.is_empty() {
            self.record(&record, &mut out);
        }
        let mut open: Vec<Line> = self.open.iter_mut().filter_map(Option::take).collect();
        open.sort_by_key(|l| l.time);
        out.extend(open);
        out
    }

    /// One record (a line of the file, without its newline).
    fn record(&mut self, record: &[u8], out: &mut Vec<Line>) {
        // The header (time, stream, tag) is ASCII; the content is whatever the container
        // wrote, kept byte for byte.
        let mut spaces = record
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b' ')
            .map(|(i, _)| i);
        let (header, content) = match (spaces.next(), spaces.next(), spaces.next()) {
            (Some(_), Some(_), Some(third)) => (&record[..third], &record[third + 1..]),
            _ => (record, &[][..]),
        };
        let Some(parsed) = std::str::from_utf8(header).ok().and_then(parse_record) else {
            tracing::debug!(
                record = %String::from_utf8_lossy(record),
                "not a CRI log record; skipped"
            );
            return;
        };
        let open = &mut self.open[slot(parsed.stream)];
        let line = open.get_or_insert_with(|| Line {
            time: parsed.time,
            stream: parsed.stream,
            text: Vec::new(),
            complete: false,
        });
        line.text.extend_from_slice(content);
        if parsed.tag == Tag::Full {
            if let Some(mut line) = open.take() {
                line.complete = true;
                out.push(line);
            }
        }
    }
}

/// What of the log to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Only the last this many lines (of those the log holds when reading starts).
    pub tail_lines: Option<usize>,
    /// Only lines whose first record was written at or after this time.
    pub since: Option<Timestamp>,
    /// Start each line with its time (RFC 3339, nanoseconds, trailing zeros dropped) and a
    /// space.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// A log being read: bytes of the file in, output out. While the log's present content is
/// read, the tail is held back; [`Reader::caught_up`] releases it, and from then on lines go
/// out as they complete.
#[derive(Debug)]
pub struct Reader {
    options: Options,
    lines: Lines,
    /// The last lines seen while catching up (when a tail is asked for).
    tail: Option<VecDeque<Line>>,
    sent: u64,
    done: bool,
}

impl Reader {
    pub fn new(options: Options) -> Reader {
        let tail = options
            .tail_lines
            .map(|n| VecDeque::with_capacity(n.min(1024)));
        Reader {
            options,
            lines: Lines::default(),
            tail,
            sent: 0,
            done: false,
        }
    }

    /// Takes the next bytes of the file; returns the output they make.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let lines = self.lines.push(bytes);
        self.take(lines)
    }

    /// Everything the log held when reading started has been fed: the tail goes out.
    pub fn caught_up(&mut self) -> Vec<u8> {
        let held: Vec<Line> = self.tail.take().map(Vec::from).unwrap_or_default();
        let mut out = Vec::new();
        for line in held {
            self.render(&line, &mut out);
        }
        out
    }

    /// The file will not grow any more: the last lines go out (the tail too, if still held).
    pub fn finish(&mut self) -> Vec<u8> {
        let lines = self.lines.finish();
        let mut out = self.take(lines);
        out.extend(self.caught_up());
        out
    }

    /// Whether the byte limit has been reached (nothing more will come out).
    pub fn done(&self) -> bool {
        self.done
    }

    fn take(&mut self, lines: Vec<Line>) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            if self.options.since.is_some_and(|since| line.time < since) {
                continue;
            }
            match (&mut self.tail, self.options.tail_lines) {
                (Some(held), Some(n)) => {
                    if n == 0 {
                        continue;
                    }
                    if held.len() == n {
                        held.pop_front();
                    }
                    held.push_back(line);
                }
                _ => self.render(&line, &mut out),
            }
        }
        out
    }

    /// Appends the line as shown, cut at the byte limit.
    fn render(&mut self, line: &Line, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let mut shown = Vec::with_capacity(line.text.len() + 40);
        if self.options.timestamps {
            shown.extend_from_slice(format!("{} ", line.time).as_bytes());
        }
        shown.extend_from_slice(&line.text);
        if line.complete {
            shown.push(b'\n');
        }
        if let Some(limit) = self.options.limit_bytes {
            let left = limit.saturating_sub(self.sent);
            if shown.len() as u64 >= left {
                shown.truncate(left as usize);
                self.done = true;
            }
        }
        self.sent += shown.len() as u64;
        out.extend_from_slice(&shown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CRI log file as the shim writes it: (seconds after 10:00:00, stream, tag, content).
    fn fixture(records: &[(u32, &str, &str, &str)]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|(s, stream, tag, content)| {
                format!("2026-12-04T10:00:{s:02}.000000100Z {stream} {tag} {content}\n")
                    .into_bytes()
            })
            .collect()
    }

    fn at(s: u32) -> Timestamp {
        format!("2026-12-04T10:00:{s:02}.000000100Z")
            .parse()
            .expect("time")
    }

    /// Reads a whole file at once.
    fn read_all(options: Options, file: &[u8]) -> String {
        let mut r = Reader::new(options);
        let mut out = r.feed(file);
        out.extend(r.finish());
        String::from_utf8(out).expect("utf-8")
    }

    fn log() -> Vec<u8> {
        fixture(&[
            (1, "stdout", "F", "line 1"),
            (2, "stdout", "F", "line 2"),
            (3, "stderr", "F", "err"),
            (4, "stdout", "P", "long "),
            (4, "stderr", "F", "between"),
            (5, "stdout", "P", "line "),
            (6, "stdout", "F", "joined"),
            (7, "stdout", "F", ""),
        ])
    }

    #[test]
    fn tail_since_and_limits_select_lines() {
        let all = "line 1\nline 2\nerr\nbetween\nlong line joined\n\n";
        let cases: Vec<(&str, Options, &str)> = vec![
            ("everything", Options::default(), all),
            (
                "tail 2",
                Options {
                    tail_lines: Some(2),
                    ..Default::default()
                },
                "long line joined\n\n",
            ),
            (
                "tail 0",
                Options {
                    tail_lines: Some(0),
                    ..Default::default()
                },
                "",
            ),
            (
                "tail longer than the log",
                Options {
                    tail_lines: Some(100),
                    ..Default::default()
                },
                all,
            ),
            (
                "since the third second",
                Options {
                    since: Some(at(3)),
                    ..Default::default()
                },
                "err\nbetween\nlong line joined\n\n",
            ),
            (
                // A joined line counts from its first record's time.
                "since the fifth second",
                Options {
                    since: Some(at(5)),
                    ..Default::default()
                },
                "\n",
            ),
            (
                "since and tail",
                Options {
                    since: Some(at(2)),
                    tail_lines: Some(3),
                    ..Default::default()
                },
                "between\nlong line joined\n\n",
            ),
            (
                "limit inside a line",
                Options {
                    limit_bytes: Some(9),
                    ..Default::default()
                },
                "line 1\nli",
            ),
            (
                "limit at a line's end",
                Options {
                    limit_bytes: Some(7),
                    ..Default::default()
                },
                "line 1\n",
            ),
        ];
        for (what, options, want) in cases {
            assert_eq!(read_all(options, &log()), want, "{what}");
        }
    }

    #[test]
    fn timestamps_prefix_each_line_with_its_first_records_time() {
        let out = read_all(
            Options {
                timestamps: true,
                tail_lines: Some(2),
                ..Default::default()
            },
            &log(),
        );
        assert_eq!(
            out,
            "2026-12-04T10:00:04.0000001Z long line joined\n2026-12-04T10:00:07.0000001Z \n"
        );
        for line in out.lines() {
            let (time, _) = line.split_once(' ').expect("prefix");
            time.parse::<Timestamp>().expect("RFC 3339");
        }
    }

    #[test]
    fn pieces_of_any_size_make_the_same_lines() {
        let file = log();
        let whole = read_all(Options::default(), &file);
        for size in [1, 2, 7, 50] {
            let mut r = Reader::new(Options::default());
            let mut out = Vec::new();
            for piece in file.chunks(size) {
                out.extend(r.feed(piece));
            }
            out.extend(r.finish());
            assert_eq!(String::from_utf8(out).expect("utf-8"), whole, "size {size}");
        }
    }

    #[test]
    fn partial_lines_join_per_stream_and_an_unfinished_one_comes_out_at_the_end() {
        let mut lines = Lines::default();
        let got = lines.push(&fixture(&[
            (1, "stdout", "P", "a"),
            (2, "stderr", "P", "x"),
            (3, "stdout", "F", "b"),
        ]));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].text.as_slice(), got[0].time), (&b"ab"[..], at(1)));
        assert!(got[0].complete);
        // The stderr line never got its last record; a record cut by the end of the file still
        // counts.
        let mut tail = fixture(&[(4, "stdout", "F", "c")]);
        tail.pop();
        assert!(lines.push(&tail).is_empty());
        let rest = lines.finish();
        let shown: Vec<(&[u8], bool)> = rest
            .iter()
            .map(|l| (l.text.as_slice(), l.complete))
            .collect();
        assert_eq!(shown, vec![(&b"c"[..], true), (&b"x"[..], false)]);
    }

    #[test]
    fn bytes_that_are_not_utf8_and_lines_that_are_not_records() {
        let mut file = b"garbage without a header\n".to_vec();
        file.extend_from_slice(b"2026-12-04T10:00:01Z stdout F \xff\xfe raw\n");
        file.extend_from_slice(b"2026-12-04T10:00:02Z stdin F nope\n");
        let mut r = Reader::new(Options::default());
        let mut out = r.feed(&file);
        out.extend(r.finish());
        assert_eq!(out, b"\xff\xfe raw\n");
    }

    #[test]
    fn following_releases_the_tail_then_streams_new_lines() {
        let mut r = Reader::new(Options {
            tail_lines: Some(1),
            ..Default::default()
        });
        assert!(
            r.feed(&log()).is_empty(),
            "the tail is held while catching up"
        );
        assert_eq!(r.caught_up(), b"\n");
        let more = fixture(&[(8, "stdout", "F", "new 1"), (9, "stderr", "F", "new 2")]);
        assert_eq!(r.feed(&more), b"new 1\nnew 2\n");
        assert!(r.finish().is_empty());
    }

    #[test]
    fn the_byte_limit_ends_the_reading() {
        let mut r = Reader::new(Options {
            limit_bytes: Some(3),
            ..Default::default()
        });
        assert_eq!(r.feed(&log()), b"lin");
        assert!(r.done());
        assert!(r.feed(&fixture(&[(8, "stdout", "F", "more")])).is_empty());
    }
}
