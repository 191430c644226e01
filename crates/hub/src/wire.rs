//! The JSON messages every stream sends (WebSocket and SSE alike); see docs/protocol.md.
//!
//! Each message is serialized once into a [`Frame`] and its bytes shared by every subscriber.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use viewcast_repr::{Diff, JsonRow, RelationDesc, Row, Timestamp};

/// One serialized JSON message (text), shared by reference among subscribers.
#[derive(Clone, Debug)]
pub struct Frame {
    pub kind: FrameKind,
    /// The timestamp a subscriber has complete data through once it has applied this frame, if any.
    pub ts: Option<Timestamp>,
    pub bytes: Bytes,
    /// The changes (update) or contents (snapshot) the frame carries, for consumers that re-encode
    /// them (keyed envelopes, consolidation of a slow client's backlog, pgwire).
    pub rows: Option<Arc<Vec<(Row, Diff)>>>,
    /// When it was serialized: where the gateway's stages of its timeline start.
    pub made: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Snapshot,
    Update,
    Progress,
    Resync,
    Error,
}

impl Frame {
    /// The same message with `"id": id` (and any `extra` JSON members) spliced in front, without
    /// re-serializing the body: the shared bytes are copied once per subscriber.
    pub fn with_id(&self, id: &str, extra: &str) -> Bytes {
        let id = serde_json::to_string(id).expect("strings serialize");
        let mut out = Vec::with_capacity(self.bytes.len() + id.len() + extra.len() + 8);
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(id.as_bytes());
        out.push(b',');
        if !extra.is_empty() {
            out.extend_from_slice(extra.as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(&self.bytes[1..]);
        Bytes::from(out)
    }
}

#[derive(Serialize)]
struct Column<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
}

struct Rows<'a>(&'a [(Row, Diff)]);

impl Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            row: JsonRow<'a>,
            diff: Diff,
        }
        s.collect_seq(self.0.iter().map(|(row, diff)| Entry { row: JsonRow(row), diff: *diff }))
    }
}

fn frame(kind: FrameKind, ts: Option<Timestamp>, msg: &impl Serialize) -> Frame {
    let bytes = serde_json::to_vec(msg).expect("wire messages always serialize");
    Frame { kind, ts, bytes: Bytes::from(bytes), rows: None, made: Instant::now() }
}

/// `{"type":"snapshot","view":V,"ts":T,"columns":[..],"rows":[..]}`: the entire view at `ts`.
pub fn snapshot(view: &str, ts: Timestamp, desc: &RelationDesc, rows: Arc<Vec<(Row, Diff)>>) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        view: &'a str,
        ts: Timestamp,
        columns: Vec<Column<'a>>,
        rows: Rows<'a>,
    }
    let columns = desc.names.iter().zip(&desc.types).map(|(name, t)| Column { name, ty: t.scalar.name() }).collect();
    let mut f = frame(FrameKind::Snapshot, Some(ts), &Msg { ty: "snapshot", view, ts, columns, rows: Rows(&rows) });
    f.rows = Some(rows);
    f
}

/// `{"type":"update","view":V,"ts":T,"rows":[..]}`: all of `ts`'s changes.
pub fn update(view: &str, ts: Timestamp, rows: Arc<Vec<(Row, Diff)>>) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        view: &'a str,
        ts: Timestamp,
        rows: Rows<'a>,
    }
    let mut f = frame(FrameKind::Update, Some(ts), &Msg { ty: "update", view, ts, rows: Rows(&rows) });
    f.rows = Some(rows);
    f
}

/// `{"type":"progress","view":V,"ts":T}`: nothing changed through `ts`.
pub fn progress(view: &str, ts: Timestamp) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        view: &'a str,
        ts: Timestamp,
    }
    frame(FrameKind::Progress, Some(ts), &Msg { ty: "progress", view, ts })
}

/// `{"type":"resync","view":V}`: discard the replica; a fresh snapshot follows.
pub fn resync(view: &str) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        view: &'a str,
    }
    frame(FrameKind::Resync, None, &Msg { ty: "resync", view })
}

/// `{"type":"error","message":..}` (with `"view"` when it concerns one).
pub fn error(view: Option<&str>, message: &str) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        view: Option<&'a str>,
        message: &'a str,
    }
    frame(FrameKind::Error, None, &Msg { ty: "error", view, message })
}

/// A keyed update (`ENVELOPE UPSERT`): `{"type":"update","view":V,"ts":T,"upserts":[[row]..],"deletes":[[key]..]}`.
pub fn keyed_update(view: &str, ts: Timestamp, upserts: &[&Row], deletes: &[Row]) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        view: &'a str,
        ts: Timestamp,
        upserts: Vec<JsonRow<'a>>,
        deletes: Vec<JsonRow<'a>>,
    }
    let upserts = upserts.iter().map(|r| JsonRow(r)).collect();
    let deletes = deletes.iter().map(JsonRow).collect();
    frame(FrameKind::Update, Some(ts), &Msg { ty: "update", view, ts, upserts, deletes })
}

/// Turns one timestamp's consolidated changes into upserts and deletes by `key` (column positions).
/// Fails when the changes leave more than one row for a key.
pub fn to_upserts<'a>(key: &[usize], rows: &'a [(Row, Diff)]) -> Result<(Vec<&'a Row>, Vec<Row>), String> {
    use std::collections::BTreeMap;
    let mut by_key: BTreeMap<Row, (Option<&'a Row>, bool)> = BTreeMap::new();
    for (row, diff) in rows {
        let k = Row::new(key.iter().map(|i| row.get(*i).clone()).collect());
        let entry = by_key.entry(k.clone()).or_insert((None, false));
        if *diff > 0 {
            if *diff > 1 || entry.0.is_some() {
                return Err(format!(
                    "key {} is not unique in this view",
                    serde_json::to_string(&JsonRow(&k)).unwrap_or_default()
                ));
            }
            entry.0 = Some(row);
        } else {
            entry.1 = true;
        }
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (k, (ins, _)) in by_key {
        match ins {
            Some(r) => upserts.push(r),
            None => deletes.push(k),
        }
    }
    Ok((upserts, deletes))
}
