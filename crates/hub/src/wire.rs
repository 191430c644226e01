//! The JSON messages every stream sends (WebSocket and SSE alike); see docs/protocol.md.
//!
//! Each message is serialized once into a [`Frame`] and its bytes shared by every subscriber.

use bytes::Bytes;
use serde::Serialize;
use viewcast_repr::{Diff, JsonRow, RelationDesc, Row, Timestamp};

/// One serialized JSON message (text), shared by reference among subscribers.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The timestamp a subscriber has complete data through once it has applied this frame, if any.
    pub ts: Option<Timestamp>,
    pub bytes: Bytes,
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

fn frame(ts: Option<Timestamp>, msg: &impl Serialize) -> Frame {
    let bytes = serde_json::to_vec(msg).expect("wire messages always serialize");
    Frame { ts, bytes: Bytes::from(bytes) }
}

/// `{"type":"snapshot","view":V,"ts":T,"columns":[..],"rows":[..]}`: the entire view at `ts`.
pub fn snapshot(view: &str, ts: Timestamp, desc: &RelationDesc, rows: &[(Row, Diff)]) -> Frame {
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
    frame(Some(ts), &Msg { ty: "snapshot", view, ts, columns, rows: Rows(rows) })
}

/// `{"type":"update","view":V,"ts":T,"rows":[..]}`: all of `ts`'s changes.
pub fn update(view: &str, ts: Timestamp, rows: &[(Row, Diff)]) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        view: &'a str,
        ts: Timestamp,
        rows: Rows<'a>,
    }
    frame(Some(ts), &Msg { ty: "update", view, ts, rows: Rows(rows) })
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
    frame(Some(ts), &Msg { ty: "progress", view, ts })
}

/// `{"type":"resync","view":V}`: discard the replica; a fresh snapshot follows.
pub fn resync(view: &str) -> Frame {
    #[derive(Serialize)]
    struct Msg<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        view: &'a str,
    }
    frame(None, &Msg { ty: "resync", view })
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
    frame(None, &Msg { ty: "error", view, message })
}
