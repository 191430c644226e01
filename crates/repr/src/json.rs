use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A `jsonb` value: a parsed JSON tree shared by reference, with its structural hash computed once.
///
/// Equality is JSON equality (object keys unordered). The order compares the hash first and the
/// tree only on a hash tie, so sorting and arranging rows of large documents stays cheap; it is a
/// total order consistent with equality, not Postgres' `jsonb` ordering.
#[derive(Clone, Debug)]
pub struct Jsonb {
    hash: u64,
    value: Arc<Value>,
}

impl Jsonb {
    pub fn new(value: Value) -> Jsonb {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        hash_value(&value, &mut h);
        Jsonb { hash: h.finish(), value: Arc::new(value) }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Parses JSON text.
    pub fn parse(text: &str) -> Result<Jsonb, serde_json::Error> {
        serde_json::from_str(text).map(Jsonb::new)
    }
}

fn hash_value<H: Hasher>(v: &Value, h: &mut H) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => {
            1u8.hash(h);
            b.hash(h)
        }
        Value::Number(n) => {
            2u8.hash(h);
            // Equal numbers print equally; hashing the text keeps hash consistent with `Number`'s `Eq`.
            n.to_string().hash(h)
        }
        Value::String(s) => {
            3u8.hash(h);
            s.hash(h)
        }
        Value::Array(a) => {
            4u8.hash(h);
            a.len().hash(h);
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(o) => {
            5u8.hash(h);
            o.len().hash(h);
            // serde_json's map iterates in key order, so equal objects hash equally.
            for (k, x) in o {
                k.hash(h);
                hash_value(x, h);
            }
        }
    }
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// A total order over JSON trees, consistent with `Value`'s equality.
fn cmp_value(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (fx, fy) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            fx.total_cmp(&fy).then_with(|| x.to_string().cmp(&y.to_string()))
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x
            .len()
            .cmp(&y.len())
            .then_with(|| x.iter().zip(y).map(|(p, q)| cmp_value(p, q)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)),
        (Value::Object(x), Value::Object(y)) => x.len().cmp(&y.len()).then_with(|| {
            x.iter()
                .zip(y)
                .map(|((kx, vx), (ky, vy))| kx.cmp(ky).then_with(|| cmp_value(vx, vy)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        _ => rank(a).cmp(&rank(b)),
    }
}

impl PartialEq for Jsonb {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.value, &other.value) || self.value == other.value)
    }
}

impl Eq for Jsonb {}

impl Ord for Jsonb {
    fn cmp(&self, other: &Self) -> Ordering {
        self.hash.cmp(&other.hash).then_with(|| {
            if Arc::ptr_eq(&self.value, &other.value) {
                Ordering::Equal
            } else {
                cmp_value(&self.value, &other.value)
            }
        })
    }
}

impl PartialOrd for Jsonb {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Jsonb {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash.hash(state)
    }
}

impl Serialize for Jsonb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Sent as text so non-self-describing formats (timely's bincode) can carry it.
        s.serialize_str(&self.value.to_string())
    }
}

impl<'de> Deserialize<'de> for Jsonb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Jsonb::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_documents_compare_equal_regardless_of_key_order() {
        let a = Jsonb::parse(r#"{"a":1,"b":[true,null,"x"]}"#).unwrap();
        let b = Jsonb::parse(r#"{"b":[true,null,"x"],"a":1}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.cmp(&b), Ordering::Equal);
        let c = Jsonb::parse(r#"{"a":2,"b":[true,null,"x"]}"#).unwrap();
        assert_ne!(a, c);
        assert_ne!(a.cmp(&c), Ordering::Equal);
        assert_eq!(a.cmp(&c), c.cmp(&a).reverse());
    }
}
