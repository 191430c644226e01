//! An incremental `text/event-stream` parser, after the WHATWG HTML "server-sent events"
//! interpretation rules: bytes go in as they arrive, in chunks split anywhere, and complete events
//! come out.

use std::time::Duration;

use crate::SourceError;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `"message"` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event ID at dispatch (it carries over from earlier events); empty if none yet.
    pub id: String,
}

/// Where the stream's leading byte-order mark (EF BB BF) check stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bom {
    /// This many BOM bytes matched so far at the very start of the stream.
    Matching(usize),
    Done,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses one event stream incrementally.
///
/// Memory is bounded by `max_event_bytes`: an event whose data (or any single line) grows past it
/// is dropped as it arrives and reported as [`SourceError::Oversize`] at its end, while the stream
/// framing, ids included, is kept.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    bom: Bom,
    /// The previous chunk ended in CR: an LF starting the next chunk ends no new line.
    after_cr: bool,
    line: Vec<u8>,
    /// The current line passed the size limit and is being skipped up to its end.
    line_overflow: bool,
    data: Vec<u8>,
    event_type: String,
    id_buffer: String,
    /// Size of the current event's data so far when it passed the limit.
    oversize: Option<usize>,
    last_event_id: String,
    retry: Option<Duration>,
}

impl SseParser {
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

    pub fn new() -> SseParser {
        SseParser::with_max_event_bytes(Self::DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_max_event_bytes(max_event_bytes: usize) -> SseParser {
        SseParser {
            max_event_bytes,
            bom: Bom::Matching(0),
            after_cr: false,
            line: Vec::new(),
            line_overflow: false,
            data: Vec::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            oversize: None,
            last_event_id: String::new(),
            retry: None,
        }
    }

    /// The id of the last dispatched event: what a reconnect sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Sets the id a resumed stream starts from, as if an event with that id had been dispatched.
    pub fn set_last_event_id(&mut self, id: &str) {
        self.last_event_id = id.to_owned();
        self.id_buffer = id.to_owned();
    }

    /// The latest `retry:` value the stream sent, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Starts a new stream (a reconnect): drops any partial line and undispatched event, and
    /// expects a BOM again. The last event ID and retry time carry over.
    pub fn reset_stream(&mut self) {
        self.bom = Bom::Matching(0);
        self.after_cr = false;
        self.line.clear();
        self.line_overflow = false;
        self.data.clear();
        self.event_type.clear();
        self.id_buffer.clone_from(&self.last_event_id);
        self.oversize = None;
    }

    /// Feeds the next bytes of the stream, calling `emit` for each event they complete, in order;
    /// a malformed event (invalid UTF-8 data, over the size limit) is emitted as an error.
    pub fn feed(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(Result<SseEvent, SourceError>)) {
        while let Bom::Matching(matched) = self.bom {
            let Some(&b) = chunk.first() else { return };
            if b == BOM[matched] {
                chunk = &chunk[1..];
                self.bom = if matched + 1 == BOM.len() { Bom::Done } else { Bom::Matching(matched + 1) };
            } else {
                // A partial BOM followed by something else was stream content after all.
                self.bom = Bom::Done;
                let partial = &BOM[..matched];
                self.feed_lines(partial, emit);
            }
        }
        self.feed_lines(chunk, emit);
    }

    fn feed_lines(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(Result<SseEvent, SourceError>)) {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) {
            self.push_line_bytes(&chunk[..end]);
            let line = std::mem::take(&mut self.line);
            if self.line_overflow {
                self.line_overflow = false;
            } else {
                self.process_line(&line, emit);
            }
            self.line = line;
            self.line.clear();
            let terminator = chunk[end];
            chunk = &chunk[end + 1..];
            if terminator == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_bytes(chunk);
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > self.max_event_bytes {
            self.line_overflow = true;
            let size = self.data.len() + self.line.len() + bytes.len();
            self.oversize = Some(self.oversize.unwrap_or(0).max(size));
            self.line.clear();
            self.data.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn process_line(&mut self, line: &[u8], emit: &mut impl FnMut(Result<SseEvent, SourceError>)) {
        if line.is_empty() {
            return self.dispatch(emit);
        }
        if line[0] == b':' {
            return;
        }
        let (field, mut value) = match memchr::memchr(b':', line) {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &line[line.len()..]),
        };
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        match field {
            b"data" => {
                if self.oversize.is_some() {
                    return;
                }
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    self.oversize = Some(self.data.len() + value.len() + 1);
                    self.data.clear();
                    return;
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => self.event_type = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => self.id_buffer = String::from_utf8_lossy(value).into_owned(),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // All digits: only overflow can fail, and a huge retry is as good as forever.
                let ms = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
                self.retry = Some(Duration::from_millis(ms));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, emit: &mut impl FnMut(Result<SseEvent, SourceError>)) {
        self.last_event_id.clone_from(&self.id_buffer);
        let event_type = std::mem::take(&mut self.event_type);
        if let Some(size) = self.oversize.take() {
            self.data.clear();
            return emit(Err(SourceError::Oversize { size, limit: self.max_event_bytes }));
        }
        if self.data.is_empty() {
            return;
        }
        self.data.pop();
        let data = std::mem::take(&mut self.data);
        let event = if event_type.is_empty() { "message".to_owned() } else { event_type };
        emit(match String::from_utf8(data) {
            Ok(data) => Ok(SseEvent { event, data, id: self.last_event_id.clone() }),
            Err(_) => Err(SourceError::InvalidUtf8),
        });
    }
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::rng::Rng;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/recentchange-sample.sse");

    type Item = Result<SseEvent, String>;

    fn parse_chunks(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<Item> {
        let mut out = Vec::new();
        for c in chunks {
            parser.feed(c, &mut |e| out.push(e.map_err(|e| e.to_string())));
        }
        out
    }

    fn parse(text: &[u8]) -> Vec<Item> {
        parse_chunks(&mut SseParser::new(), &[text])
    }

    fn ev(event: &str, data: &str, id: &str) -> Item {
        Ok(SseEvent { event: event.into(), data: data.into(), id: id.into() })
    }

    fn msg(data: &str) -> Item {
        ev("message", data, "")
    }

    #[test]
    fn spec_examples() {
        // WHATWG HTML §9.2.6 examples.
        assert_eq!(parse(b"data: YHOO\ndata: +2\ndata: 10\n\n"), vec![msg("YHOO\n+2\n10")]);
        assert_eq!(
            parse(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"),
            vec![ev("message", "first event", "1"), msg("second event"), msg(" third event")]
        );
        assert_eq!(parse(b"data\n\ndata\ndata\n\ndata:"), vec![msg(""), msg("\n")]);
        assert_eq!(parse(b"data:test\n\ndata: test\n\n"), vec![msg("test"), msg("test")]);
    }

    #[test]
    fn event_type_resets_and_id_persists() {
        let mut p = SseParser::new();
        let out = parse_chunks(&mut p, &[b"event: add\nid: 7\ndata: a\n\ndata: b\n\nid: 8\n\n"]);
        assert_eq!(out, vec![ev("add", "a", "7"), ev("message", "b", "7")]);
        // A blank event still moves the last event ID on.
        assert_eq!(p.last_event_id(), "8");
    }

    #[test]
    fn id_with_nul_is_ignored() {
        assert_eq!(
            parse(b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"),
            vec![ev("message", "a", "1"), ev("message", "b", "1")]
        );
    }

    #[test]
    fn retry_needs_only_digits() {
        let mut p = SseParser::new();
        parse_chunks(&mut p, &[b"retry: 1500\n\nretry: 10a\n\nretry:\n\nretry: -5\n\n"]);
        assert_eq!(p.retry(), Some(Duration::from_millis(1500)));
        parse_chunks(&mut p, &[b"retry:20\n"]);
        assert_eq!(p.retry(), Some(Duration::from_millis(20)));
    }

    #[test]
    fn unknown_fields_and_comments_are_ignored() {
        assert_eq!(parse(b":comment\nfoo: bar\ndata: x\nData: y\n: data: z\n\n"), vec![msg("x")]);
    }

    #[test]
    fn line_endings_cr_lf_crlf_and_cr_at_chunk_boundary() {
        let want = vec![msg("a\nb"), msg("c")];
        assert_eq!(parse(b"data: a\ndata: b\n\ndata: c\n\n"), want);
        assert_eq!(parse(b"data: a\rdata: b\r\rdata: c\r\r"), want);
        assert_eq!(parse(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"), want);
        assert_eq!(parse(b"data: a\r\ndata: b\r\rdata: c\n\r\n"), want);
        // CRLF split across chunks is one line end, not a line end and an empty line.
        let mut p = SseParser::new();
        assert_eq!(parse_chunks(&mut p, &[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\ndata: c\r\n\r", b"\n"]), want);
        // A lone CR at a chunk end followed by other bytes.
        let mut p = SseParser::new();
        assert_eq!(parse_chunks(&mut p, &[b"data: a\r", b"data: b\r", b"\r", b"data: c\r", b"\r"]), want);
    }

    #[test]
    fn leading_bom_is_stripped_once_even_split() {
        assert_eq!(parse(b"\xEF\xBB\xBFdata: a\n\n"), vec![msg("a")]);
        let mut p = SseParser::new();
        assert_eq!(parse_chunks(&mut p, &[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]), vec![msg("a")]);
        // A second BOM is part of the field name, so the line is an unknown field.
        assert_eq!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"), vec![msg("b")]);
        // A partial BOM is content.
        let mut p = SseParser::new();
        assert_eq!(parse_chunks(&mut p, &[b"\xEF\xBB", b"x\n\ndata: b\n\n"]), vec![msg("b")]);
    }

    #[test]
    fn incomplete_event_is_dropped_on_reset() {
        let mut p = SseParser::new();
        let out = parse_chunks(&mut p, &[b"id: 1\ndata: a\n\nid: 2\ndata: partial"]);
        assert_eq!(out, vec![ev("message", "a", "1")]);
        p.reset_stream();
        assert_eq!(p.last_event_id(), "1");
        let out = parse_chunks(&mut p, &[b"data: b\n\n"]);
        assert_eq!(out, vec![ev("message", "b", "1")]);
    }

    #[test]
    fn malformed_events_are_errors_between_good_ones() {
        let mut text = b"data: good1\n\ndata: bad \xFF\xFE utf8\n\ndata: good2\n\n".to_vec();
        text.extend_from_slice(b"id: big\ndata: ");
        text.extend(std::iter::repeat_n(b'x', 5000));
        text.extend_from_slice(b"\ndata: more\n\ndata: ");
        text.extend(std::iter::repeat_n(b'y', 600));
        text.extend_from_slice(b"\ndata: ");
        text.extend(std::iter::repeat_n(b'z', 600));
        text.extend_from_slice(b"\n\ndata: good3\n\n");
        for chunk in [1, 7, 100, text.len()] {
            let mut p = SseParser::with_max_event_bytes(1000);
            let chunks: Vec<&[u8]> = text.chunks(chunk).collect();
            let out = parse_chunks(&mut p, &chunks);
            assert_eq!(out.len(), 6, "{out:?}");
            assert_eq!(out[0], msg("good1"));
            assert_eq!(out[1], Err(SourceError::InvalidUtf8.to_string()));
            assert_eq!(out[2], msg("good2"));
            assert!(out[3].as_ref().unwrap_err().contains("exceeds the limit of 1000"), "{out:?}");
            assert!(out[4].as_ref().unwrap_err().contains("exceeds the limit of 1000"), "{out:?}");
            assert_eq!(out[5], ev("message", "good3", "big"));
            assert!(p.line.capacity() <= 2048 && p.data.capacity() <= 2048);
        }
    }

    /// The fixture file stops right after its last `data:` line: by the spec that last event is
    /// incomplete and never dispatched. Tests that want all three events end it properly.
    fn terminated_fixture() -> Vec<u8> {
        [FIXTURE, b"\n\n"].concat()
    }

    fn fixture_variants() -> Vec<Vec<u8>> {
        let lf = terminated_fixture();
        let text = String::from_utf8(lf.clone()).unwrap();
        vec![
            lf,
            text.replace('\n', "\r\n").into_bytes(),
            text.replace('\n', "\r").into_bytes(),
            [b"\xEF\xBB\xBF".as_slice(), text.replace('\n', "\r\n").as_bytes()].concat(),
        ]
    }

    #[test]
    fn fixture_parses_to_three_recentchange_events() {
        assert_eq!(parse(FIXTURE).len(), 2, "an event without its blank line is not dispatched");
        let out = parse(&terminated_fixture());
        assert_eq!(out.len(), 3);
        for e in &out {
            let e = e.as_ref().unwrap();
            assert_eq!(e.event, "message");
            assert!(e.id.starts_with("[{\"topic\":\"eqiad.mediawiki.recentchange\""));
            let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["$schema"], "/mediawiki/recentchange/1.0.0");
        }
    }

    /// Any way of cutting the stream into chunks gives the same events.
    #[test]
    fn any_chunking_of_the_fixture_gives_the_same_events() {
        let want = parse(&terminated_fixture());
        assert_eq!(want.len(), 3);
        for text in fixture_variants() {
            assert_eq!(parse(&text), want);
            // Every single cut point, and every pair of cut points near line ends.
            for cut in 0..=text.len() {
                assert_eq!(parse_chunks(&mut SseParser::new(), &[&text[..cut], &text[cut..]]), want, "cut at {cut}");
            }
            let ends: Vec<usize> = (0..text.len()).filter(|&i| matches!(text[i], b'\r' | b'\n')).collect();
            for &a in &ends {
                for &b in &ends {
                    for (a, b) in [(a, b), (a + 1, b), (a, b + 1), (a + 1, b + 1)] {
                        if a <= b && b <= text.len() {
                            let chunks = [&text[..a], &text[a..b], &text[b..]];
                            assert_eq!(parse_chunks(&mut SseParser::new(), &chunks), want, "cuts at {a}, {b}");
                        }
                    }
                }
            }
            // Byte by byte, and many random cuttings.
            let bytes: Vec<&[u8]> = text.chunks(1).collect();
            assert_eq!(parse_chunks(&mut SseParser::new(), &bytes), want);
            let mut rng = Rng::new(text.len() as u64);
            for _ in 0..300 {
                let mut chunks = Vec::new();
                let mut rest = &text[..];
                while !rest.is_empty() {
                    let max = if rng.below(2) == 0 { 8 } else { 400 };
                    let n = (1 + rng.below(max) as usize).min(rest.len());
                    chunks.push(&rest[..n]);
                    rest = &rest[n..];
                }
                assert_eq!(parse_chunks(&mut SseParser::new(), &chunks), want);
            }
        }
    }
}
