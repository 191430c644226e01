//! `jsonb` values in a compact, canonical binary form.
//!
//! A document is one shared allocation: an 8-byte hash of its encoding, then the encoding. JSON
//! text is parsed straight into the encoding (no intermediate tree), `->`/`->>` read it in place,
//! and a sub-document is a copy of a byte range. A recentchange event takes about as many bytes as
//! its JSON text; the `serde_json::Value` tree this replaces took 5.2x its text.
//!
//! The encoding, little-endian, one tag byte per value:
//!
//! | tag | value | payload |
//! |---|---|---|
//! | 0, 1, 2 | `null`, `false`, `true` | none |
//! | 3 | a non-negative integer | `u64` |
//! | 4 | a negative integer | `i64` |
//! | 5 | any other number | `f64` |
//! | 6 | a string | `u32` length, UTF-8 bytes |
//! | 7 | an array | `u32` length of what follows it, `u32` count, the elements |
//! | 8 | an object | `u32` length of what follows it, `u32` count, a `u32` offset per member, (`u32` key length, key, value)* |
//!
//! A member's offset counts from the first member. Object keys are sorted bytewise and unique (a repeated key keeps its last value, as Postgres'
//! `jsonb` and `serde_json` do), and numbers keep `serde_json`'s distinction between integers and
//! floats, so two documents are equal exactly when their encodings are: equality and hashing are
//! byte comparisons. `->` finds a member by binary search over the offsets. The order compares the hash first and the bytes only on a tie: a total order
//! consistent with equality, cheap for large documents, not Postgres' `jsonb` ordering.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const POS_INT: u8 = 3;
const NEG_INT: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// Bytes before the encoding in a [`Jsonb`]'s allocation: the hash.
const HASH_LEN: usize = 8;
/// Nesting deeper than this is refused when decoding untrusted encodings (serde_json's own parser
/// stops at 128).
const MAX_DEPTH: usize = 256;

/// A `jsonb` value: its canonical encoding, shared by reference, with its hash computed once.
#[derive(Clone)]
pub struct Jsonb {
    buf: Arc<[u8]>,
}

impl Jsonb {
    /// Parses JSON text.
    pub fn parse(text: &str) -> Result<Jsonb, serde_json::Error> {
        Jsonb::from_slice(text.as_bytes())
    }

    /// Parses JSON text given as bytes (it must be UTF-8).
    pub fn from_slice(bytes: &[u8]) -> Result<Jsonb, serde_json::Error> {
        // Validating the whole text once lets serde_json skip validating each string; invalid
        // text is parsed from the bytes only to report where it fails.
        match std::str::from_utf8(bytes) {
            Ok(text) => Jsonb::parse_all(&mut serde_json::Deserializer::from_str(text)),
            Err(_) => Jsonb::parse_all(&mut serde_json::Deserializer::from_slice(bytes)),
        }
    }

    fn parse_all<'de, R: serde_json::de::Read<'de>>(
        de: &mut serde_json::Deserializer<R>,
    ) -> Result<Jsonb, serde_json::Error> {
        let doc = Jsonb::deserialize_json(&mut *de)?;
        de.end()?;
        Ok(doc)
    }

    /// Deserializes one JSON document from any self-describing deserializer (e.g. one value of a
    /// `serde_json` stream) straight into the encoding.
    pub fn deserialize_json<'de, D: Deserializer<'de>>(d: D) -> Result<Jsonb, D::Error> {
        with_scratch(|scratch| {
            scratch.buf.clear();
            scratch.buf.resize(HASH_LEN, 0);
            scratch.members.clear();
            Encode(&mut *scratch).deserialize(d)?;
            let doc = Jsonb::seal_copy(&mut scratch.buf);
            scratch.trim();
            Ok(doc)
        })
    }

    /// Encodes a `serde_json` tree.
    pub fn from_value(value: &Value) -> Jsonb {
        let mut buf = vec![0; HASH_LEN];
        encode_value(value, &mut buf);
        Jsonb::seal(buf)
    }

    /// JSON `null`.
    pub fn null() -> Jsonb {
        Jsonb::seal(vec![0, 0, 0, 0, 0, 0, 0, 0, NULL])
    }

    /// The document, to read in place.
    pub fn json(&self) -> Json<'_> {
        Json(&self.buf[HASH_LEN..])
    }

    /// The document as a `serde_json` tree (allocates one node per value).
    pub fn to_value(&self) -> Value {
        self.json().to_value()
    }

    /// Bytes held for this document (encoding and hash, not the shared allocation's header).
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    fn hash_value(&self) -> u64 {
        u64::from_le_bytes(self.buf[..HASH_LEN].try_into().expect("8 bytes"))
    }

    /// Stores the hash of `buf[HASH_LEN..]` in its first bytes and freezes it.
    fn seal(mut buf: Vec<u8>) -> Jsonb {
        Jsonb::write_hash(&mut buf);
        Jsonb { buf: buf.into() }
    }

    /// [`Jsonb::seal`] into a new allocation, leaving `buf` to be reused.
    fn seal_copy(buf: &mut [u8]) -> Jsonb {
        Jsonb::write_hash(buf);
        Jsonb { buf: Arc::from(&*buf) }
    }

    fn write_hash(buf: &mut [u8]) {
        let mut h = rustc_hash::FxHasher::default();
        h.write(&buf[HASH_LEN..]);
        buf[..HASH_LEN].copy_from_slice(&h.finish().to_le_bytes());
    }

    /// Accepts an encoding from outside (a deserialized one) only if it is well formed.
    fn from_encoding(encoding: &[u8]) -> Option<Jsonb> {
        if validate(encoding, 0)? != encoding.len() {
            return None;
        }
        let mut buf = Vec::with_capacity(HASH_LEN + encoding.len());
        buf.resize(HASH_LEN, 0);
        buf.extend_from_slice(encoding);
        Some(Jsonb::seal(buf))
    }
}

impl From<Json<'_>> for Jsonb {
    fn from(json: Json<'_>) -> Jsonb {
        let mut buf = Vec::with_capacity(HASH_LEN + json.0.len());
        buf.resize(HASH_LEN, 0);
        buf.extend_from_slice(json.0);
        Jsonb::seal(buf)
    }
}

impl PartialEq for Jsonb {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf) || self.buf == other.buf
    }
}

impl Eq for Jsonb {}

impl Ord for Jsonb {
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.buf, &other.buf) {
            return Ordering::Equal;
        }
        self.hash_value().cmp(&other.hash_value()).then_with(|| self.buf[HASH_LEN..].cmp(&other.buf[HASH_LEN..]))
    }
}

impl PartialOrd for Jsonb {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Jsonb {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_value())
    }
}

impl fmt::Display for Jsonb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.json().fmt(f)
    }
}

impl fmt::Debug for Jsonb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jsonb({})", self.json())
    }
}

/// Carried as its encoding, so non-self-describing formats (timely's bincode) can carry it; read
/// back only if well formed.
impl Serialize for Jsonb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.buf[HASH_LEN..])
    }
}

impl<'de> Deserialize<'de> for Jsonb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EncodingVisitor;
        impl<'de> Visitor<'de> for EncodingVisitor {
            type Value = Jsonb;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a jsonb encoding")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Jsonb, E> {
                Jsonb::from_encoding(v).ok_or_else(|| E::custom("malformed jsonb encoding"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Jsonb, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                self.visit_bytes(&bytes)
            }
        }
        d.deserialize_bytes(EncodingVisitor)
    }
}

/// A JSON document deserialized from its JSON form (e.g. `serde_json::StreamDeserializer`'s items).
pub struct JsonbDocument(pub Jsonb);

impl<'de> Deserialize<'de> for JsonbDocument {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Jsonb::deserialize_json(d).map(JsonbDocument)
    }
}

/// A number as `serde_json` keeps it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum JsonNumber {
    PosInt(u64),
    NegInt(i64),
    Float(f64),
}

impl JsonNumber {
    pub fn as_f64(self) -> f64 {
        match self {
            JsonNumber::PosInt(u) => u as f64,
            JsonNumber::NegInt(i) => i as f64,
            JsonNumber::Float(f) => f,
        }
    }

    /// The value as an `i64` if it is an integer that fits.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            JsonNumber::PosInt(u) => i64::try_from(u).ok(),
            JsonNumber::NegInt(i) => Some(i),
            JsonNumber::Float(_) => None,
        }
    }

    fn to_number(self) -> serde_json::Number {
        match self {
            JsonNumber::PosInt(u) => u.into(),
            JsonNumber::NegInt(i) => i.into(),
            JsonNumber::Float(f) => serde_json::Number::from_f64(f).expect("encoded floats are finite"),
        }
    }
}

impl fmt::Display for JsonNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_number(), f)
    }
}

/// A borrowed, encoded JSON value: exactly one value's bytes.
#[derive(Clone, Copy)]
pub struct Json<'a>(&'a [u8]);

/// What a [`Json`] value is.
#[derive(Clone, Copy)]
pub enum JsonView<'a> {
    Null,
    Bool(bool),
    Number(JsonNumber),
    String(&'a str),
    Array(JsonArray<'a>),
    Object(JsonObject<'a>),
}

/// An encoded array's elements.
#[derive(Clone, Copy)]
pub struct JsonArray<'a> {
    len: usize,
    body: &'a [u8],
}

/// An encoded object's members, in key order.
#[derive(Clone, Copy)]
pub struct JsonObject<'a> {
    len: usize,
    body: &'a [u8],
}

fn read_u32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The length of the value encoded at the start of `b`.
fn value_len(b: &[u8]) -> usize {
    match b[0] {
        NULL | FALSE | TRUE => 1,
        POS_INT | NEG_INT | FLOAT => 9,
        _ => 5 + read_u32(b, 1),
    }
}

fn utf8(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("jsonb strings are UTF-8 (checked when encoded)")
}

impl<'a> Json<'a> {
    pub fn view(self) -> JsonView<'a> {
        let b = self.0;
        match b[0] {
            NULL => JsonView::Null,
            FALSE => JsonView::Bool(false),
            TRUE => JsonView::Bool(true),
            POS_INT => JsonView::Number(JsonNumber::PosInt(read_u64(b, 1))),
            NEG_INT => JsonView::Number(JsonNumber::NegInt(read_u64(b, 1) as i64)),
            FLOAT => JsonView::Number(JsonNumber::Float(f64::from_bits(read_u64(b, 1)))),
            STRING => JsonView::String(utf8(&b[5..5 + read_u32(b, 1)])),
            ARRAY => JsonView::Array(JsonArray { len: read_u32(b, 5), body: &b[9..5 + read_u32(b, 1)] }),
            _ => JsonView::Object(JsonObject { len: read_u32(b, 5), body: &b[9..5 + read_u32(b, 1)] }),
        }
    }

    /// A string's contents; `None` for other values.
    pub fn as_str(self) -> Option<&'a str> {
        match self.view() {
            JsonView::String(s) => Some(s),
            _ => None,
        }
    }

    /// `self -> key` for an object; `None` for a missing key or a non-object.
    pub fn get(self, key: &str) -> Option<Json<'a>> {
        match self.view() {
            JsonView::Object(o) => o.get(key),
            _ => None,
        }
    }

    /// `self -> i` for an array, counting from the end when negative; `None` when out of range or
    /// not an array.
    pub fn index(self, i: i64) -> Option<Json<'a>> {
        match self.view() {
            JsonView::Array(a) => {
                let i = if i < 0 { a.len() as i64 + i } else { i };
                usize::try_from(i).ok().and_then(|i| a.iter().nth(i))
            }
            _ => None,
        }
    }

    /// `jsonb_typeof`.
    pub fn type_name(self) -> &'static str {
        match self.0[0] {
            NULL => "null",
            FALSE | TRUE => "boolean",
            POS_INT | NEG_INT | FLOAT => "number",
            STRING => "string",
            ARRAY => "array",
            _ => "object",
        }
    }

    /// The text `->>` gives: `None` for JSON null, a string's contents, else the value as JSON.
    pub fn text(self) -> Option<std::borrow::Cow<'a, str>> {
        match self.view() {
            JsonView::Null => None,
            JsonView::String(s) => Some(s.into()),
            _ => Some(self.to_string().into()),
        }
    }

    pub fn to_value(self) -> Value {
        match self.view() {
            JsonView::Null => Value::Null,
            JsonView::Bool(b) => Value::Bool(b),
            JsonView::Number(n) => Value::Number(n.to_number()),
            JsonView::String(s) => Value::String(s.to_owned()),
            JsonView::Array(a) => Value::Array(a.iter().map(Json::to_value).collect()),
            JsonView::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.to_owned(), v.to_value())).collect()),
        }
    }
}

impl<'a> JsonArray<'a> {
    pub fn len(self) -> usize {
        self.len
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Json<'a>> {
        let mut rest = self.body;
        (0..self.len).map(move |_| {
            let n = value_len(rest);
            let (v, tail) = rest.split_at(n);
            rest = tail;
            Json(v)
        })
    }
}

impl<'a> JsonObject<'a> {
    pub fn len(self) -> usize {
        self.len
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// The members, after the offsets.
    fn members(self) -> &'a [u8] {
        &self.body[4 * self.len..]
    }

    pub fn iter(self) -> impl Iterator<Item = (&'a str, Json<'a>)> {
        let mut rest = self.members();
        (0..self.len).map(move |_| {
            let (key, value, tail) = split_member(rest);
            rest = tail;
            (utf8(key), Json(value))
        })
    }

    /// The member `key`. The index where this thread last found the same key (the same `&str`,
    /// as a plan's literal is) is tried first: the documents of one source share their keys, so
    /// one comparison usually finds it. Otherwise a binary search (keys are sorted).
    pub fn get(self, key: &str) -> Option<Json<'a>> {
        let slot = (key.as_ptr() as usize >> 3) % LOOKUP_HINTS;
        let hint = LOOKUP_HINT.with(|h| h[slot].get());
        if hint.0 == key.as_ptr() as usize && hint.1 < self.len {
            if let Some(found) = self.member_at(hint.1, key.as_bytes()) {
                return Some(found);
            }
        }
        let found = self.search(key.as_bytes());
        if let Some((at, _)) = found {
            LOOKUP_HINT.with(|h| h[slot].set((key.as_ptr() as usize, at)));
        }
        found.map(|(_, value)| value)
    }

    /// The value of member `i` if its key is `key`.
    fn member_at(self, i: usize, key: &[u8]) -> Option<Json<'a>> {
        let members = self.members();
        let at = read_u32(self.body, 4 * i);
        let klen = read_u32(members, at);
        if klen != key.len() || key_cmp(&members[at + 4..at + 4 + klen], key) != Ordering::Equal {
            return None;
        }
        let value = &members[at + 4 + klen..];
        Some(Json(&value[..value_len(value)]))
    }

    /// The index and value of member `key`, by binary search.
    fn search(self, key: &[u8]) -> Option<(usize, Json<'a>)> {
        let members = self.members();
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = read_u32(self.body, 4 * mid);
            let klen = read_u32(members, at);
            match key_cmp(&members[at + 4..at + 4 + klen], key) {
                Ordering::Equal => {
                    let value = &members[at + 4 + klen..];
                    return Some((mid, Json(&value[..value_len(value)])));
                }
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
            }
        }
        None
    }
}

/// Slots of [`LOOKUP_HINT`], chosen by the key's address.
const LOOKUP_HINTS: usize = 64;

thread_local! {
    /// Per slot: the address of a key this thread looked up and the member index it was at.
    static LOOKUP_HINT: [std::cell::Cell<(usize, usize)>; LOOKUP_HINTS] =
        const { [const { std::cell::Cell::new((0, 0)) }; LOOKUP_HINTS] };
}

/// Splits `(key, value, rest)` off the member encoded at the start of `b`.
fn split_member(b: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let klen = read_u32(b, 0);
    let key = &b[4..4 + klen];
    let after = &b[4 + klen..];
    let (value, rest) = after.split_at(value_len(after));
    (key, value, rest)
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.view() {
            JsonView::Null => s.serialize_unit(),
            JsonView::Bool(b) => s.serialize_bool(b),
            JsonView::Number(JsonNumber::PosInt(u)) => s.serialize_u64(u),
            JsonView::Number(JsonNumber::NegInt(i)) => s.serialize_i64(i),
            JsonView::Number(JsonNumber::Float(f)) => s.serialize_f64(f),
            JsonView::String(t) => s.serialize_str(t),
            JsonView::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a.iter() {
                    seq.serialize_element(&x)?;
                }
                seq.end()
            }
            JsonView::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o.iter() {
                    map.serialize_entry(k, &v)?;
                }
                map.end()
            }
        }
    }
}

impl Json<'_> {
    /// The length of the compact JSON text `serde_json` prints for this document, without
    /// printing it (what a source counts as the bytes of a record it made itself). One sequential
    /// pass over the encoding.
    pub fn text_len(self) -> usize {
        text_len_at(self.0).0
    }
}

/// The printed length of the value at the start of `b`, and the bytes of encoding it spans.
fn text_len_at(b: &[u8]) -> (usize, usize) {
    fn decimal_len(u: u64) -> usize {
        u.checked_ilog10().unwrap_or(0) as usize + 1
    }
    fn string_len(s: &[u8]) -> usize {
        // Most strings need no escape: a branch-free count (it vectorizes) rules that out before
        // the per-byte table.
        let special = s.iter().filter(|&&c| c < 0x20 || c == b'"' || c == b'\\').count();
        let extra = if special == 0 { 0 } else { s.iter().map(|&c| ESCAPE_EXTRA[c as usize] as usize).sum() };
        2 + s.len() + extra
    }
    match b[0] {
        NULL | TRUE => (4, 1),
        FALSE => (5, 1),
        POS_INT => (decimal_len(read_u64(b, 1)), 9),
        NEG_INT => (1 + decimal_len((read_u64(b, 1) as i64).unsigned_abs()), 9),
        FLOAT => (JsonNumber::Float(f64::from_bits(read_u64(b, 1))).to_number().to_string().len(), 9),
        STRING => {
            let n = read_u32(b, 1);
            (string_len(&b[5..5 + n]), 5 + n)
        }
        tag => {
            let (end, count) = (5 + read_u32(b, 1), read_u32(b, 5));
            let mut at = 9 + if tag == OBJECT { 4 * count } else { 0 };
            let mut text = 2 + count.saturating_sub(1);
            for _ in 0..count {
                if tag == OBJECT {
                    let klen = read_u32(b, at);
                    text += string_len(&b[at + 4..at + 4 + klen]) + 1;
                    at += 4 + klen;
                }
                let (t, n) = text_len_at(&b[at..end]);
                text += t;
                at += n;
            }
            (text, end)
        }
    }
}

/// Extra bytes `serde_json`'s compact printer adds when escaping each byte value.
const ESCAPE_EXTRA: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = 5;
        b += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 1;
    t[b'\n' as usize] = 1;
    t[b'\r' as usize] = 1;
    t[b'\t' as usize] = 1;
    t[0x08] = 1;
    t[0x0c] = 1;
    t
};

/// Compact JSON text, as `serde_json` prints (keys in order).
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

// ---- encoding ----

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(STRING);
    buf.extend_from_slice(&len_u32(s.len()).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn len_u32(n: usize) -> u32 {
    // Request bodies and source records are limited far below 4 GiB long before they get here.
    u32::try_from(n).expect("a jsonb document under 4 GiB")
}

/// Writes a container's header; returns where it starts, for [`finish_container`].
fn start_container(buf: &mut Vec<u8>, tag: u8) -> usize {
    let start = buf.len();
    buf.push(tag);
    buf.extend_from_slice(&[0; 8]);
    start
}

fn finish_container(buf: &mut [u8], start: usize, count: usize) {
    let body = len_u32(buf.len() - (start + 5));
    buf[start + 1..start + 5].copy_from_slice(&body.to_le_bytes());
    buf[start + 5..start + 9].copy_from_slice(&len_u32(count).to_le_bytes());
}

fn put_number(buf: &mut Vec<u8>, n: JsonNumber) {
    match n {
        JsonNumber::PosInt(u) => {
            buf.push(POS_INT);
            buf.extend_from_slice(&u.to_le_bytes());
        }
        JsonNumber::NegInt(i) if i >= 0 => put_number(buf, JsonNumber::PosInt(i as u64)),
        JsonNumber::NegInt(i) => {
            buf.push(NEG_INT);
            buf.extend_from_slice(&i.to_le_bytes());
        }
        JsonNumber::Float(f) if f.is_finite() => {
            buf.push(FLOAT);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        // What `serde_json::Value::from(f64)` does with non-finite floats.
        JsonNumber::Float(_) => buf.push(NULL),
    }
}

fn encode_value(v: &Value, buf: &mut Vec<u8>) {
    match v {
        Value::Null => buf.push(NULL),
        Value::Bool(b) => buf.push(if *b { TRUE } else { FALSE }),
        Value::Number(n) => put_number(
            buf,
            match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => JsonNumber::PosInt(u),
                (None, Some(i)) => JsonNumber::NegInt(i),
                (None, None) => JsonNumber::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        ),
        Value::String(s) => put_str(buf, s),
        Value::Array(items) => {
            let start = start_container(buf, ARRAY);
            for x in items {
                encode_value(x, buf);
            }
            finish_container(buf, start, items.len());
        }
        Value::Object(members) => {
            // serde_json's map iterates in key order, each key once: already canonical.
            let start = start_container(buf, OBJECT);
            let table = buf.len();
            buf.resize(table + 4 * members.len(), 0);
            let first = buf.len();
            for (i, (k, x)) in members.iter().enumerate() {
                let offset = len_u32(buf.len() - first).to_le_bytes();
                buf[table + 4 * i..table + 4 * i + 4].copy_from_slice(&offset);
                buf.extend_from_slice(&len_u32(k.len()).to_le_bytes());
                buf.extend_from_slice(k.as_bytes());
                encode_value(x, buf);
            }
            finish_container(buf, start, members.len());
        }
    }
}

/// The order of object keys: bytewise, deciding on the first byte without a `memcmp` call when it
/// differs (it nearly always does between neighbouring keys).
#[inline]
fn key_cmp(a: &[u8], b: &[u8]) -> Ordering {
    // Object keys are short: a byte loop beats a call to `memcmp`.
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// The buffers of one thread's parses, reused from document to document: the encoding being
/// built, and the bookkeeping for sorting object members.
#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    /// Where each member of the objects being parsed starts: a stack, as a nested object's
    /// members are pushed after its parent's and popped when it is finished.
    members: Vec<usize>,
    /// (key start, key end, member start, member end) of the members being sorted.
    order: Vec<(usize, usize, usize, usize)>,
    sorted: Vec<u8>,
}

/// A scratch buffer larger than this is given back after the document that grew it.
const SCRATCH_KEEP: usize = 1 << 20;

impl Scratch {
    fn trim(&mut self) {
        if self.buf.capacity() > SCRATCH_KEEP {
            self.buf = Vec::new();
        }
        if self.sorted.capacity() > SCRATCH_KEEP {
            self.sorted = Vec::new();
        }
    }

    /// Puts the members parsed since `members[first]` (to the end of `buf`) in canonical form:
    /// sorted by key, the last of repeated keys kept, behind a table of their offsets. Pops them
    /// off `members` and returns how many remain.
    fn finish_members(&mut self, first: usize) -> usize {
        let Scratch { buf, members, order, sorted } = self;
        if members.len() == first {
            return 0;
        }
        let begin = members[first];
        let end = buf.len();
        let key = |at: usize| {
            let klen = read_u32(buf, at);
            at + 4..at + 4 + klen
        };
        let mine = &members[first..];
        order.clear();
        order.extend(mine.iter().enumerate().map(|(i, &at)| {
            let k = key(at);
            (k.start, k.end, at, mine.get(i + 1).copied().unwrap_or(end))
        }));
        if !order.windows(2).all(|w| key_cmp(&buf[w[0].0..w[0].1], &buf[w[1].0..w[1].1]).is_lt()) {
            // Stable: of equal keys, the last parsed stays last, and is the one kept.
            order.sort_by(|a, b| key_cmp(&buf[a.0..a.1], &buf[b.0..b.1]));
            let mut kept = 0;
            for i in 0..order.len() {
                if order.get(i + 1).is_some_and(|next| buf[next.0..next.1] == buf[order[i].0..order[i].1]) {
                    continue;
                }
                order[kept] = order[i];
                kept += 1;
            }
            order.truncate(kept);
        }
        sorted.clear();
        sorted.resize(4 * order.len(), 0);
        let mut offset = 0;
        for (i, &(_, _, from, to)) in order.iter().enumerate() {
            sorted[4 * i..4 * i + 4].copy_from_slice(&len_u32(offset).to_le_bytes());
            offset += to - from;
        }
        for &(_, _, from, to) in order.iter() {
            sorted.extend_from_slice(&buf[from..to]);
        }
        buf.truncate(begin);
        buf.extend_from_slice(sorted);
        members.truncate(first);
        order.len()
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are in use further up the stack).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Deserializes one JSON value into the scratch buffer it holds.
struct Encode<'b>(&'b mut Scratch);

impl<'de> DeserializeSeed<'de> for Encode<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Encode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.buf.push(NULL);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.buf.push(if v { TRUE } else { FALSE });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        put_number(&mut self.0.buf, JsonNumber::NegInt(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        put_number(&mut self.0.buf, JsonNumber::PosInt(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        put_number(&mut self.0.buf, JsonNumber::Float(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if u32::try_from(v.len()).is_err() {
            return Err(E::custom("a JSON string over 4 GiB"));
        }
        put_str(&mut self.0.buf, v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let scratch = self.0;
        let start = start_container(&mut scratch.buf, ARRAY);
        let mut count = 0;
        while seq.next_element_seed(Encode(&mut *scratch))?.is_some() {
            count += 1;
        }
        check_size::<A::Error>(scratch.buf.len() - start)?;
        finish_container(&mut scratch.buf, start, count);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let scratch = self.0;
        let start = start_container(&mut scratch.buf, OBJECT);
        let first = scratch.members.len();
        loop {
            let at = scratch.buf.len();
            if map.next_key_seed(Key(&mut scratch.buf))?.is_none() {
                break;
            }
            map.next_value_seed(Encode(&mut *scratch))?;
            scratch.members.push(at);
        }
        check_size::<A::Error>(scratch.buf.len() - start)?;
        let count = scratch.finish_members(first);
        finish_container(&mut scratch.buf, start, count);
        Ok(())
    }
}

fn check_size<E: de::Error>(n: usize) -> Result<(), E> {
    u32::try_from(n).map(|_| ()).map_err(|_| E::custom("a JSON document over 4 GiB"))
}

/// Builds one `jsonb` document value by value, straight into the encoding: what a producer of
/// documents (the load generator) uses instead of building a `serde_json::Value` tree to encode.
///
/// Values are written in document order; an object's members may come in any key order (they
/// are sorted, and of a repeated key the last is kept, when the object ends). A misuse (a value
/// where a key is due, unbalanced containers, [`JsonbWriter::finish`] without exactly one
/// complete value) is a bug in the caller and panics.
///
/// ```
/// # use viewcast_repr::{Jsonb, JsonbWriter};
/// let mut w = JsonbWriter::new();
/// w.begin_object();
/// w.key("b").u64(2);
/// w.key("a").begin_array();
/// w.str("x").null();
/// w.end_array();
/// w.end_object();
/// assert_eq!(w.finish(), Jsonb::parse(r#"{"a":["x",null],"b":2}"#).unwrap());
/// ```
#[derive(Default)]
pub struct JsonbWriter {
    scratch: Scratch,
    /// The containers being written, innermost last.
    open: Vec<Open>,
    /// Whether a key was written and its value is due.
    key_due: bool,
    /// Complete top-level values written (one is a document).
    done: usize,
}

enum Open {
    Array { start: usize, count: usize },
    Object { start: usize, first: usize },
}

impl JsonbWriter {
    pub fn new() -> JsonbWriter {
        let mut w = JsonbWriter::default();
        w.scratch.buf.resize(HASH_LEN, 0);
        w
    }

    /// Accounts for a value about to be written where it is.
    fn value(&mut self) {
        match self.open.last_mut() {
            None => self.done += 1,
            Some(Open::Array { count, .. }) => *count += 1,
            Some(Open::Object { .. }) => {
                assert!(self.key_due, "a jsonb object member needs its key first");
                self.key_due = false;
            }
        }
    }

    /// The key of the next member of the innermost object; its value comes next.
    pub fn key(&mut self, key: &str) -> &mut Self {
        assert!(
            matches!(self.open.last(), Some(Open::Object { .. })) && !self.key_due,
            "a jsonb key outside an object"
        );
        let buf = &mut self.scratch.buf;
        self.scratch.members.push(buf.len());
        buf.extend_from_slice(&len_u32(key.len()).to_le_bytes());
        buf.extend_from_slice(key.as_bytes());
        self.key_due = true;
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.value();
        self.scratch.buf.push(NULL);
        self
    }

    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.value();
        self.scratch.buf.push(if b { TRUE } else { FALSE });
        self
    }

    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.value();
        put_number(&mut self.scratch.buf, JsonNumber::PosInt(n));
        self
    }

    pub fn i64(&mut self, n: i64) -> &mut Self {
        self.value();
        put_number(&mut self.scratch.buf, JsonNumber::NegInt(n));
        self
    }

    /// A float; a non-finite one is written as `null`, as `serde_json::Value::from` does.
    pub fn f64(&mut self, f: f64) -> &mut Self {
        self.value();
        put_number(&mut self.scratch.buf, JsonNumber::Float(f));
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.value();
        put_str(&mut self.scratch.buf, s);
        self
    }

    pub fn begin_array(&mut self) -> &mut Self {
        self.value();
        let start = start_container(&mut self.scratch.buf, ARRAY);
        self.open.push(Open::Array { start, count: 0 });
        self
    }

    pub fn end_array(&mut self) -> &mut Self {
        let Some(Open::Array { start, count }) = self.open.pop() else {
            panic!("end_array without an open jsonb array")
        };
        finish_container(&mut self.scratch.buf, start, count);
        self
    }

    pub fn begin_object(&mut self) -> &mut Self {
        self.value();
        let start = start_container(&mut self.scratch.buf, OBJECT);
        self.open.push(Open::Object { start, first: self.scratch.members.len() });
        self
    }

    pub fn end_object(&mut self) -> &mut Self {
        assert!(!self.key_due, "a jsonb key without its value");
        let Some(Open::Object { start, first }) = self.open.pop() else {
            panic!("end_object without an open jsonb object")
        };
        let count = self.scratch.finish_members(first);
        finish_container(&mut self.scratch.buf, start, count);
        self
    }

    /// Bytes of encoding written so far for the current document.
    pub fn len(&self) -> usize {
        self.scratch.buf.len() - HASH_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The document written since the last `finish`; the writer is then ready for the next one
    /// and keeps its buffers.
    pub fn finish(&mut self) -> Jsonb {
        assert!(self.open.is_empty() && self.done == 1, "a jsonb document is exactly one complete value");
        let doc = Jsonb::seal_copy(&mut self.scratch.buf);
        self.scratch.trim();
        self.scratch.buf.clear();
        self.scratch.buf.resize(HASH_LEN, 0);
        self.done = 0;
        doc
    }
}

/// Deserializes an object key as a member's `u32` length and bytes.
struct Key<'b>(&'b mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        check_size::<E>(v.len())?;
        self.0.extend_from_slice(&len_u32(v.len()).to_le_bytes());
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
}

/// Checks that `b` starts with a well-formed canonical value; returns its length.
fn validate(b: &[u8], depth: usize) -> Option<usize> {
    let tag = *b.first()?;
    let u32_at = |at: usize| b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize);
    match tag {
        NULL | FALSE | TRUE => Some(1),
        POS_INT | NEG_INT => (b.len() >= 9).then_some(9),
        FLOAT => {
            let f = f64::from_bits(u64::from_le_bytes(b.get(1..9)?.try_into().ok()?));
            f.is_finite().then_some(9)
        }
        STRING => {
            let n = u32_at(1)?;
            std::str::from_utf8(b.get(5..5 + n)?).ok()?;
            Some(5 + n)
        }
        ARRAY | OBJECT if depth < MAX_DEPTH => {
            let body = b.get(9..5 + u32_at(1)?)?;
            let count = u32_at(5)?;
            let u32_in =
                |at: usize| body.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize);
            let table = if tag == OBJECT { count.checked_mul(4)? } else { 0 };
            let mut at = table;
            let mut last_key: Option<&[u8]> = None;
            for i in 0..count {
                if tag == OBJECT {
                    if u32_in(4 * i)? != at - table {
                        return None;
                    }
                    let klen = u32_in(at)?;
                    let key = body.get(at + 4..at + 4 + klen)?;
                    std::str::from_utf8(key).ok()?;
                    if last_key.is_some_and(|k| k >= key) {
                        return None;
                    }
                    last_key = Some(key);
                    at += 4 + klen;
                }
                at += validate(body.get(at..)?, depth + 1)?;
            }
            (at == body.len()).then_some(5 + u32_at(1)?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "-0",
        "1",
        "-1",
        "1.0",
        "1.5e300",
        "-2.25",
        "18446744073709551615",
        "-9223372036854775808",
        r#""""#,
        r#""h\u00e9llo \"q\" \n""#,
        "[]",
        "{}",
        r#"[1,[2,[3,{"a":[]}]],null,"x"]"#,
        r#"{"b":1,"a":2,"c":{"z":[1,2],"y":null}}"#,
        r#"{"user":"Ann","bot":false,"length":{"old":10,"new":25},"meta":{"offset":7},"tags":["a","b"]}"#,
        r#"{"a":1,"a":2}"#,
        r#"{"k":{"x":1},"k":[true]}"#,
        r#"{"":0,"é":1,"e":2,"ee":3}"#,
    ];

    fn check_against_serde_json(text: &str) {
        let value: Value = serde_json::from_str(text).unwrap();
        let parsed = Jsonb::parse(text).unwrap();
        let encoded = Jsonb::from_value(&value);
        assert_eq!(parsed, encoded, "{text}: parsing and encoding the tree differ");
        assert_eq!(parsed.json().0, encoded.json().0, "{text}");
        assert_eq!(parsed.to_value(), value, "{text}: round trip");
        assert_eq!(parsed.to_string(), value.to_string(), "{text}: printed form");
        assert_eq!(parsed.json().type_name(), type_name(&value));
        let cloned = Jsonb::from(parsed.json());
        assert_eq!(cloned, parsed);
        // Every member and element is found where serde_json has it, and nothing else is.
        let mut stack = vec![(parsed.json(), value.clone())];
        while let Some((json, value)) = stack.pop() {
            match &value {
                Value::Object(members) => {
                    for probe in ["", "0", "1", "2", "3", "4", "a", "zz", "é"] {
                        assert_eq!(json.get(probe).map(Json::to_value), members.get(probe).cloned(), "{text}: {probe}");
                    }
                    stack.extend(members.iter().map(|(k, v)| (json.get(k).expect("member"), v.clone())));
                }
                Value::Array(items) => {
                    for i in -(items.len() as i64) - 1..=items.len() as i64 {
                        let want = if i < 0 { items.len() as i64 + i } else { i };
                        let want = usize::try_from(want).ok().and_then(|i| items.get(i)).cloned();
                        assert_eq!(json.index(i).map(Json::to_value), want, "{text}: [{i}]");
                    }
                    stack.extend(
                        items.iter().enumerate().map(|(i, v)| (json.index(i as i64).expect("element"), v.clone())),
                    );
                }
                _ => assert!(json.get("a").is_none() && json.index(0).is_none()),
            }
        }
    }

    fn type_name(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    #[test]
    fn parsing_agrees_with_serde_json() {
        for doc in DOCS {
            check_against_serde_json(doc);
        }
    }

    #[test]
    fn bad_text_is_an_error() {
        for bad in [&b"\"\xff\""[..], b"{\"a\":1", b"[1,]", b"{\"a\" 1}", b"1 2", b"", b"nul"] {
            assert!(Jsonb::from_slice(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // A failed parse leaves nothing behind for the next one.
        assert!(Jsonb::parse(r#"{"z":{"y":[1,{"x":"#).is_err());
        assert_eq!(Jsonb::parse(r#"{"b":1,"a":2}"#).unwrap().to_string(), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn equal_documents_compare_equal_regardless_of_key_order() {
        let a = Jsonb::parse(r#"{"a":1,"b":[true,null,"x"]}"#).unwrap();
        let b = Jsonb::parse(r#"{"b":[true,null,"x"],"a":1}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.cmp(&b), Ordering::Equal);
        let hash = |j: &Jsonb| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            j.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));
        let c = Jsonb::parse(r#"{"a":2,"b":[true,null,"x"]}"#).unwrap();
        assert_ne!(a, c);
        assert_ne!(a.cmp(&c), Ordering::Equal);
        assert_eq!(a.cmp(&c), c.cmp(&a).reverse());
        // serde_json tells integers from floats; so does the encoding.
        assert_ne!(Jsonb::parse("1").unwrap(), Jsonb::parse("1.0").unwrap());
    }

    #[test]
    fn navigation_agrees_with_serde_json() {
        let text = DOCS[18];
        let value: Value = serde_json::from_str(text).unwrap();
        let doc = Jsonb::parse(text).unwrap();
        for key in ["user", "bot", "length", "meta", "tags", "missing", "", "zzz"] {
            assert_eq!(doc.json().get(key).map(Json::to_value), value.get(key).cloned(), "{key}");
        }
        assert_eq!(doc.json().get("length").and_then(|l| l.get("new")).map(Json::to_value), Some(25.into()));
        let tags = doc.json().get("tags").unwrap();
        assert_eq!(tags.index(0).map(Json::to_value), Some("a".into()));
        assert_eq!(tags.index(-1).map(Json::to_value), Some("b".into()));
        assert!(tags.index(2).is_none() && tags.index(-3).is_none());
        assert!(doc.json().index(0).is_none(), "an object has no elements");
        assert!(tags.get("a").is_none(), "an array has no members");
        assert_eq!(doc.json().get("user").unwrap().text().as_deref(), Some("Ann"));
        assert_eq!(doc.json().get("length").unwrap().text().as_deref(), Some(r#"{"new":25,"old":10}"#));
        assert_eq!(Jsonb::null().json().text(), None);
    }

    #[test]
    fn carried_as_its_encoding_and_refused_when_malformed() {
        for doc in DOCS {
            let j = Jsonb::parse(doc).unwrap();
            // serde_json writes bytes as an array of numbers: the non-self-describing path's shape.
            let carried = serde_json::to_string(&j).unwrap();
            let back: Jsonb = serde_json::from_str(&carried).unwrap_or_else(|e| panic!("{doc} as {carried}: {e}"));
            assert_eq!(back, j, "{doc}");
        }
        let good = Jsonb::parse(r#"{"a":[1,"x"]}"#).unwrap();
        let bytes = good.json().0.to_vec();
        for cut in 0..bytes.len() {
            assert!(Jsonb::from_encoding(&bytes[..cut]).is_none(), "truncated at {cut}");
        }
        let mut bad_tag = bytes.clone();
        bad_tag[0] = 42;
        assert!(Jsonb::from_encoding(&bad_tag).is_none());
        // Unsorted keys are not canonical.
        let object_of = |keys: [&str; 2]| {
            let mut buf = Vec::new();
            let start = start_container(&mut buf, OBJECT);
            buf.extend_from_slice(&0u32.to_le_bytes());
            buf.extend_from_slice(&6u32.to_le_bytes());
            for k in keys {
                buf.extend_from_slice(&1u32.to_le_bytes());
                buf.extend_from_slice(k.as_bytes());
                buf.push(NULL);
            }
            finish_container(&mut buf, start, 2);
            buf
        };
        assert!(Jsonb::from_encoding(&object_of(["b", "a"])).is_none());
        assert_eq!(Jsonb::from_encoding(&object_of(["a", "b"])), Some(Jsonb::parse(r#"{"b":null,"a":null}"#).unwrap()));
    }

    /// A small deterministic generator of nested documents with repeated and unordered keys.
    fn random_doc(seed: &mut u64, depth: u32) -> String {
        fn next(seed: &mut u64) -> u64 {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        }
        let pick = next(seed) % if depth == 0 { 6 } else { 8 };
        match pick {
            0 => "null".into(),
            1 => "true".into(),
            2 => format!("{}", next(seed) % 1000),
            3 => format!("-{}.{}", next(seed) % 1000, next(seed) % 100),
            4 => format!("{}", -((next(seed) % 1000) as i64) - 1),
            5 => format!("\"k{}\\t\"", next(seed) % 5),
            6 => {
                let n = next(seed) % 4;
                let items: Vec<String> = (0..n).map(|_| random_doc(seed, depth - 1)).collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let n = next(seed) % 5;
                let members: Vec<String> = (0..n)
                    .map(|_| {
                        let key = next(seed) % 4;
                        format!("\"{key}\":{}", random_doc(seed, depth - 1))
                    })
                    .collect();
                format!("{{{}}}", members.join(","))
            }
        }
    }

    /// The same key (one `&str`, as a plan's literal) looked up in documents whose members sit at
    /// other indexes, or that lack it, finds exactly what a search finds: a remembered index is
    /// only a first guess.
    #[test]
    fn lookups_with_a_remembered_index_match_a_search() {
        let docs = [
            r#"{"a": 1, "b": 2, "user": "x"}"#,
            r#"{"user": "y"}"#,
            r#"{"a": 1, "b": 2, "c": 3, "d": 4, "user": "z", "zz": 0}"#,
            r#"{"a": 1, "b": 2, "c": 3}"#,
            r#"{"user": null, "users": 1}"#,
            r#"{"usee": 1, "userx": 2}"#,
            r#"[1, 2, 3]"#,
        ];
        let key = String::from("user");
        for _ in 0..3 {
            for text in docs {
                let doc = Jsonb::parse(text).unwrap();
                let want = serde_json::from_str::<serde_json::Value>(text).unwrap().get(key.as_str()).cloned();
                let got = doc.json().get(&key).map(|j| j.to_value());
                assert_eq!(got, want, "{text}");
            }
        }
    }

    #[test]
    fn random_documents_agree_with_serde_json() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            check_against_serde_json(&random_doc(&mut seed, 4));
        }
    }

    /// Writes a random document into `w` and returns the same document as JSON text, with
    /// repeated and unordered keys, strings that need escaping, and every kind of number.
    fn random_written(seed: &mut u64, depth: u32, w: &mut JsonbWriter) -> String {
        fn next(seed: &mut u64) -> u64 {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        }
        match next(seed) % if depth == 0 { 7 } else { 9 } {
            0 => {
                w.null();
                "null".into()
            }
            1 => {
                let b = next(seed).is_multiple_of(2);
                w.bool(b);
                b.to_string()
            }
            2 => {
                let n = next(seed) >> (next(seed) % 64);
                w.u64(n);
                n.to_string()
            }
            3 => {
                let n = -((next(seed) % 1_000_000) as i64) - 1;
                w.i64(n);
                n.to_string()
            }
            4 => {
                let f = (next(seed) % 100_000) as f64 / 64.0 - 700.5;
                w.f64(f);
                serde_json::to_string(&f).unwrap()
            }
            5 => {
                let s = ["", "plain", "tab\t", "quote\"", "\u{1}ctl", "h\u{e9}llo"][next(seed) as usize % 6];
                w.str(s);
                serde_json::to_string(s).unwrap()
            }
            6 => {
                // A signed value that happens to be non-negative is an unsigned one.
                let n = (next(seed) % 1000) as i64;
                w.i64(n);
                n.to_string()
            }
            7 => {
                w.begin_array();
                let items: Vec<String> = (0..next(seed) % 4).map(|_| random_written(seed, depth - 1, w)).collect();
                w.end_array();
                format!("[{}]", items.join(","))
            }
            _ => {
                w.begin_object();
                let members: Vec<String> = (0..next(seed) % 5)
                    .map(|_| {
                        let key = format!("k{}", next(seed) % 4);
                        w.key(&key);
                        format!("\"{key}\":{}", random_written(seed, depth - 1, w))
                    })
                    .collect();
                w.end_object();
                format!("{{{}}}", members.join(","))
            }
        }
    }

    #[test]
    fn the_writer_builds_what_the_parser_builds() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        let mut w = JsonbWriter::new();
        for _ in 0..2_000 {
            let text = random_written(&mut seed, 4, &mut w);
            let written = w.finish();
            let parsed = Jsonb::parse(&text).unwrap();
            assert_eq!(written, parsed, "{text}");
            assert_eq!(written.json().text_len(), serde_json::to_string(&written.to_value()).unwrap().len(), "{text}");
        }
    }

    #[test]
    fn text_len_counts_escapes_and_numbers_as_serde_json_prints_them() {
        let tricky = serde_json::json!({
            "a\"b": "quote \" backslash \\ newline \n tab \t cr \r bell \u{7} nul \u{0} ff \u{c} bs \u{8}",
            "unicode": "\u{200e}<span dir=\"auto\">é日本</span>",
            "nums": [0, 9, 10, -1, -10, 18446744073709551615u64, -9223372036854775808i64, 1.5, 1e300, 0.1],
            "empty": {}, "empty_list": [], "null": null, "t": true, "f": false,
        });
        let doc = Jsonb::from_value(&tricky);
        assert_eq!(doc.json().text_len(), serde_json::to_string(&tricky).unwrap().len());
    }

    #[test]
    #[should_panic(expected = "exactly one complete value")]
    fn the_writer_refuses_an_unfinished_document() {
        let mut w = JsonbWriter::new();
        w.begin_object().key("a").u64(1);
        w.finish();
    }

    #[test]
    fn a_recentchange_event_costs_about_its_text() {
        let sse = include_str!("../../sources/tests/fixtures/recentchange-sample.sse");
        let (mut text_bytes, mut encoded_bytes, mut events) = (0, 0, 0);
        for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let Ok(doc) = Jsonb::parse(line) else { continue };
            check_against_serde_json(line);
            text_bytes += line.len();
            encoded_bytes += doc.encoded_len();
            events += 1;
        }
        assert!(events >= 3, "the fixture's events parse");
        assert!(
            encoded_bytes * 10 <= text_bytes * 13,
            "{encoded_bytes} encoded bytes for {text_bytes} bytes of JSON text in {events} events"
        );
    }
}
