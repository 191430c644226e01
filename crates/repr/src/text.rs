//! [`Str`]: a `text` value, short strings held inline.
//!
//! Most text a dashboard's views carry is short: user names, wiki names, change types, country
//! codes. Held as `Arc<str>`, every such value extracted from a `jsonb` row was an allocation, a
//! copy, a reference count to bump on every clone and to drop, and a pointer to follow on every
//! hash and comparison (the counts' and top-k's tables of 100,000 users compared keys through it).
//! Up to 23 bytes are now kept in the value itself ([`smol_str::SmolStr`]), which keeps
//! [`crate::Datum`] at 24 bytes; longer text is shared by reference as before.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;

/// A `text` value. It behaves as the `str` it holds: equality, order and hash are the string's,
/// whether it is inline or shared.
#[derive(Clone, PartialEq, Eq)]
pub struct Str(SmolStr);

impl Str {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the text is held in the value itself (no allocation).
    pub fn is_inline(&self) -> bool {
        !self.0.is_heap_allocated()
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str(SmolStr::new(s))
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str(SmolStr::from(s))
    }
}

impl Deref for Str {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Ord for Str {
    /// `str`'s order, which is its bytes' order.
    fn cmp(&self, other: &Str) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Str {
    /// As `str` hashes, so a text's hash is the same in every process and whether it is inline
    /// or not.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Str {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str, D::Error> {
        // Borrowed where the format allows, so short text is copied once, into the value.
        let s: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        Ok(match s {
            std::borrow::Cow::Borrowed(s) => Str::from(s),
            std::borrow::Cow::Owned(s) => Str::from(s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// The longest text `SmolStr` holds inline, in bytes.
    const INLINE: usize = 23;

    fn texts() -> Vec<String> {
        vec![
            String::new(),
            "a".into(),
            "enwiki".into(),
            "ß€😀".into(),
            "x".repeat(INLINE - 1),
            "x".repeat(INLINE),
            "x".repeat(INLINE + 1),
            format!("{}é", "y".repeat(INLINE - 1)),
            "a much longer title of a Wikipedia page".into(),
            format!("{}\u{0}", "z".repeat(5)),
        ]
    }

    #[test]
    fn behaves_as_the_str_it_holds() {
        let all = texts();
        let hasher = std::collections::hash_map::RandomState::new();
        for a in &all {
            let s = Str::from(a.as_str());
            assert_eq!(s.as_str(), a);
            assert_eq!(s.len(), a.len());
            assert_eq!(s.is_inline(), a.len() <= INLINE, "{a:?}");
            assert_eq!(Str::from(a.clone()), s);
            assert_eq!(hasher.hash_one(&s), hasher.hash_one(a.as_str()), "the hash is str's");
            assert_eq!(format!("{s:?}"), format!("{a:?}"));
            assert_eq!(s.to_string(), *a);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, serde_json::to_string(a).unwrap());
            assert_eq!(serde_json::from_str::<Str>(&json).unwrap(), s);
            for b in &all {
                let t = Str::from(b.as_str());
                assert_eq!(s == t, a == b);
                assert_eq!(s.cmp(&t), a.as_str().cmp(b.as_str()), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_datum_stays_three_words() {
        assert_eq!(std::mem::size_of::<crate::Datum>(), 24);
    }
}
