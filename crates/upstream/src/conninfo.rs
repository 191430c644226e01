//! The parts of a libpq connection string that tokio-postgres does not take: `sslmode`'s
//! `verify-ca` and `verify-full` and `sslrootcert`. They are taken out of the string (the query of
//! a `postgres://` URL, or `key=value` pairs) and the rest is left to tokio-postgres, which
//! reports its own syntax errors. Also hides the password of a connection string for display.

use std::ops::Range;

/// A connection string without its TLS parameters, and those parameters (decoded).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Split {
    pub rest: String,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

const TAKEN: [&str; 2] = ["sslmode", "sslrootcert"];

pub(crate) fn split_tls_params(conn: &str) -> Split {
    let mut split = Split { rest: conn.to_string(), sslmode: None, sslrootcert: None };
    let mut take = |key: &str, value: String| match key {
        "sslmode" => split.sslmode = Some(value),
        _ => split.sslrootcert = Some(value),
    };
    if url_parts(conn).is_some() {
        if let Some((base, query)) = conn.split_once('?') {
            let mut kept = Vec::new();
            for pair in query.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = percent_decode(k);
                if TAKEN.contains(&k.as_str()) {
                    take(&k, percent_decode(v));
                } else {
                    kept.push(pair);
                }
            }
            split.rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        }
    } else if let Some(pairs) = key_values(conn) {
        // A string that does not tokenize is left whole for tokio-postgres to reject.
        let mut rest = String::new();
        let mut from = 0;
        for p in pairs.into_iter().filter(|p| TAKEN.contains(&p.key.as_str())) {
            rest.push_str(&conn[from..p.span.start]);
            from = p.span.end;
            take(&p.key, p.value);
        }
        rest.push_str(&conn[from..]);
        split.rest = rest;
    }
    split
}

/// `conn` with its password (if any) replaced by `<redacted>`: what may be shown or logged.
pub fn redact_password(conn: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    if let Some(authority) = url_parts(conn) {
        let mut out = conn.to_string();
        // tokio-postgres splits the credentials off at the last '@' of the authority.
        if let Some(at) = conn[authority.clone()].rfind('@') {
            let creds = authority.start..authority.start + at;
            if let Some(colon) = conn[creds.clone()].find(':') {
                out.replace_range(creds.start + colon + 1..creds.end, HIDDEN);
            }
        }
        if let Some(q) = out.find('?') {
            let query: Vec<String> = out[q + 1..]
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if percent_decode(k) == "password" => format!("{k}={HIDDEN}"),
                    _ => pair.to_string(),
                })
                .collect();
            out = format!("{}?{}", &out[..q], query.join("&"));
        }
        return out;
    }
    match key_values(conn) {
        Some(pairs) => {
            let mut out = conn.to_string();
            for p in pairs.iter().rev().filter(|p| p.key == "password") {
                out.replace_range(p.value_span.clone(), HIDDEN);
            }
            out
        }
        // Not a connection string tokio-postgres accepts: show none of it.
        None => HIDDEN.to_string(),
    }
}

/// The authority's byte range (credentials, hosts, ports) of a `postgres://` URL.
fn url_parts(conn: &str) -> Option<Range<usize>> {
    let start = ["postgres://", "postgresql://"].iter().find(|p| conn.starts_with(**p))?.len();
    let end = conn[start..].find(['/', '?']).map_or(conn.len(), |i| start + i);
    Some(start..end)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Pair {
    key: String,
    value: String,
    /// The whole `key = value`, and the value as written (quotes included).
    span: Range<usize>,
    value_span: Range<usize>,
}

/// libpq's `key=value` form: spaces around `=` allowed; a value is single-quoted (with `\'` and
/// `\\`) or runs to the next space (with backslash escapes). `None` if it does not parse.
fn key_values(conn: &str) -> Option<Vec<Pair>> {
    let b = conn.as_bytes();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut pairs = Vec::new();
    loop {
        i = skip_space(i);
        if i == b.len() {
            return Some(pairs);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = conn[start..i].to_string();
        i = skip_space(i);
        if b.get(i) != Some(&b'=') || key.is_empty() {
            return None;
        }
        i = skip_space(i + 1);
        let value_start = i;
        let mut value = Vec::new();
        let quoted = b.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        loop {
            match b.get(i) {
                None if quoted => return None,
                None => break,
                Some(b'\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(c) if !quoted && c.is_ascii_whitespace() => break,
                Some(b'\\') => {
                    value.push(*b.get(i + 1)?);
                    i += 2;
                }
                Some(c) => {
                    value.push(*c);
                    i += 1;
                }
            }
        }
        let value = String::from_utf8(value).ok()?;
        pairs.push(Pair { key, value, span: start..i, value_span: value_start..i });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(rest: &str, sslmode: Option<&str>, sslrootcert: Option<&str>) -> Split {
        Split { rest: rest.into(), sslmode: sslmode.map(Into::into), sslrootcert: sslrootcert.map(Into::into) }
    }

    #[test]
    fn tls_params_leave_urls() {
        assert_eq!(
            split_tls_params("postgres://u:p@h:6875/mz?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&options=x"),
            split("postgres://u:p@h:6875/mz?options=x", Some("verify-full"), Some("/tmp/ca.pem"))
        );
        assert_eq!(
            split_tls_params("postgresql://h/db?sslmode=require"),
            split("postgresql://h/db", Some("require"), None)
        );
        assert_eq!(split_tls_params("postgres://h/db"), split("postgres://h/db", None, None));
    }

    #[test]
    fn tls_params_leave_key_values() {
        assert_eq!(
            split_tls_params("host=h sslmode = verify-ca port=6875 sslrootcert='/a b/c\\'s.pem' user=u"),
            split("host=h  port=6875  user=u", Some("verify-ca"), Some("/a b/c's.pem"))
        );
        assert_eq!(split_tls_params("host=h user=u"), split("host=h user=u", None, None));
        // Unparseable: left whole, for tokio-postgres to report.
        assert_eq!(split_tls_params("host=h sslmode"), split("host=h sslmode", None, None));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://me%40x.com:mzp_secret@h:6875/materialize?sslmode=require"),
            "postgres://me%40x.com:<redacted>@h:6875/materialize?sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://me@h/db?password=s3cret&x=1"),
            "postgres://me@h/db?password=<redacted>&x=1"
        );
        assert_eq!(redact_password("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_password("host=h password='a b' user=u password=x"),
            "host=h password=<redacted> user=u password=<redacted>"
        );
        assert_eq!(redact_password("password='unterminated"), "<redacted>");
    }
}
