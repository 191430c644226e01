//! Who may read what, and how many connections may be open.
//!
//! With no tokens configured everything is open (a local demo). With tokens, every request needs
//! one: as `Authorization: Bearer <token>`, as the `viewcast_token` cookie (EventSource cannot set
//! headers), or as the first WebSocket message `{"type":"auth","token":..}`. A grant either reads
//! every view and may write (SQL API, ad-hoc queries), or reads only the views it lists. Tokens are
//! never logged.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap};

use crate::ApiError;

/// One token and what it allows.
#[derive(Clone, Debug)]
pub struct Grant {
    pub token: String,
    /// `None`: every view, plus writes and ad-hoc queries. `Some(views)`: reading those views only.
    pub views: Option<HashSet<String>>,
}

/// What a request is allowed to do.
#[derive(Clone, Debug)]
pub enum Access {
    /// No tokens configured, or an unrestricted token.
    Full,
    Views(HashSet<String>),
    None,
}

impl Access {
    pub fn can_read(&self, view: &str) -> bool {
        match self {
            Access::Full => true,
            Access::Views(v) => v.contains(view),
            Access::None => false,
        }
    }

    pub fn can_write(&self) -> bool {
        matches!(self, Access::Full)
    }
}

/// Token checks shared by every route.
#[derive(Debug, Default)]
pub struct Auth {
    grants: Vec<Grant>,
}

impl Auth {
    pub fn new(grants: Vec<Grant>) -> Auth {
        Auth { grants }
    }

    pub fn required(&self) -> bool {
        !self.grants.is_empty()
    }

    /// Access for a presented token (or none).
    pub fn check(&self, token: Option<&str>) -> Access {
        if self.grants.is_empty() {
            return Access::Full;
        }
        let Some(token) = token else { return Access::None };
        match self.grants.iter().find(|g| constant_time_eq(g.token.as_bytes(), token.as_bytes())) {
            Some(Grant { views: None, .. }) => Access::Full,
            Some(Grant { views: Some(v), .. }) => Access::Views(v.clone()),
            None => Access::None,
        }
    }

    /// Access from the request's `Authorization` header or `viewcast_token` cookie.
    pub fn from_headers(&self, headers: &HeaderMap) -> Access {
        self.check(token_from_headers(headers).as_deref())
    }

    /// Fails with 401 unless the request may read `view`.
    pub fn require_read(&self, headers: &HeaderMap, view: &str) -> Result<(), ApiError> {
        match self.from_headers(headers) {
            a if a.can_read(view) => Ok(()),
            Access::None => Err(ApiError::Unauthorized("a valid token is required".into())),
            _ => Err(ApiError::Forbidden(format!("this token may not read \"{view}\""))),
        }
    }

    /// Fails with 401/403 unless the request may write.
    pub fn require_write(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.from_headers(headers) {
            Access::Full => Ok(()),
            Access::None => Err(ApiError::Unauthorized("a valid token is required".into())),
            Access::Views(_) => Err(ApiError::Forbidden("this token may only read views".into())),
        }
    }
}

fn token_from_headers(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(t.trim().to_string());
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("viewcast_token=").map(str::to_string))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Caps on open streaming connections, in total and per client address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// An admitted connection; releases its slot when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, ApiError> {
        let mut per_ip = self.per_ip.lock().expect("limits lock");
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(ApiError::TooMany(format!("at most {} streaming connections per address", self.max_per_ip)));
        }
        if self.total.fetch_add(1, Ordering::SeqCst) >= self.max_total {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::TooMany(format!("at most {} streaming connections", self.max_total)));
        }
        *n += 1;
        Ok(ConnectionSlot { limits: self.clone(), ip })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::SeqCst);
        let mut per_ip = self.limits.per_ip.lock().expect("limits lock");
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_caps() {
        let auth = Auth::new(vec![
            Grant { token: "admin".into(), views: None },
            Grant { token: "reader".into(), views: Some(["top10".to_string()].into()) },
        ]);
        assert!(auth.check(Some("admin")).can_write());
        assert!(auth.check(Some("reader")).can_read("top10"));
        assert!(!auth.check(Some("reader")).can_read("counter"));
        assert!(!auth.check(Some("reader")).can_write());
        assert!(!auth.check(Some("nope")).can_read("top10"));
        assert!(!auth.check(None).can_read("top10"));
        assert!(Auth::default().check(None).can_write());
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=b; viewcast_token=reader".parse().unwrap());
        assert!(auth.from_headers(&h).can_read("top10"));

        let limits = ConnectionLimits::new(3, 2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a = limits.admit(ip).unwrap();
        let _b = limits.admit(ip).unwrap();
        assert!(limits.admit(ip).is_err(), "per-address cap");
        let _c = limits.admit(other).unwrap();
        assert!(limits.admit("127.0.0.3".parse().unwrap()).is_err(), "total cap");
        drop(a);
        assert!(limits.admit(ip).is_ok(), "a closed connection frees its slot");
    }
}
