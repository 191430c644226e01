use serde::{Deserialize, Serialize};

/// A SQL type, named as Postgres names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScalarType {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Numeric,
    Text,
    Jsonb,
    Date,
    Timestamp,
    TimestampTz,
    Interval,
}

impl ScalarType {
    /// The Postgres name, as `information_schema` and the wire protocol's column lists print it.
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::Bool => "boolean",
            ScalarType::Int16 => "smallint",
            ScalarType::Int32 => "integer",
            ScalarType::Int64 => "bigint",
            ScalarType::Float32 => "real",
            ScalarType::Float64 => "double precision",
            ScalarType::Numeric => "numeric",
            ScalarType::Text => "text",
            ScalarType::Jsonb => "jsonb",
            ScalarType::Date => "date",
            ScalarType::Timestamp => "timestamp without time zone",
            ScalarType::TimestampTz => "timestamp with time zone",
            ScalarType::Interval => "interval",
        }
    }

    /// The Postgres type OID.
    pub fn oid(self) -> u32 {
        match self {
            ScalarType::Bool => 16,
            ScalarType::Int16 => 21,
            ScalarType::Int32 => 23,
            ScalarType::Int64 => 20,
            ScalarType::Float32 => 700,
            ScalarType::Float64 => 701,
            ScalarType::Numeric => 1700,
            ScalarType::Text => 25,
            ScalarType::Jsonb => 3802,
            ScalarType::Date => 1082,
            ScalarType::Timestamp => 1114,
            ScalarType::TimestampTz => 1184,
            ScalarType::Interval => 1186,
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(self, ScalarType::Int16 | ScalarType::Int32 | ScalarType::Int64)
    }

    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, ScalarType::Float32 | ScalarType::Float64 | ScalarType::Numeric)
    }
}

/// The type of one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnType {
    pub scalar: ScalarType,
    pub nullable: bool,
}

impl ColumnType {
    pub fn new(scalar: ScalarType, nullable: bool) -> Self {
        ColumnType { scalar, nullable }
    }
}

/// Column names and types of a relation, in column order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationDesc {
    pub names: Vec<String>,
    pub types: Vec<ColumnType>,
}

impl RelationDesc {
    pub fn new(columns: impl IntoIterator<Item = (String, ColumnType)>) -> Self {
        let (names, types) = columns.into_iter().unzip();
        RelationDesc { names, types }
    }

    pub fn arity(&self) -> usize {
        self.types.len()
    }

    /// Position of the column called `name`, if exactly one has that name.
    pub fn position(&self, name: &str) -> Option<usize> {
        let mut found = self.names.iter().enumerate().filter(|(_, n)| n.as_str() == name);
        match (found.next(), found.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }
}
