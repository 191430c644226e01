//! The upstream connection against a real PostgreSQL (the machine's, 127.0.0.1:5432, trust
//! authentication, `ssl = on` with its own self-signed certificate): each `sslmode` gets the
//! encryption it asks for, as the server itself reports it.

use viewcast_upstream::{connect, UpstreamConfig};

const BASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// Whether the server says this session is encrypted.
async fn encrypted(conn: &str) -> Result<bool, viewcast_upstream::UpstreamError> {
    let client = connect(&UpstreamConfig::new(conn, "unused")).await?;
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn sslmodes_against_postgres() {
    assert!(encrypted(&format!("{BASE} sslmode=require")).await.unwrap(), "require");
    assert!(encrypted(BASE).await.unwrap(), "the default, prefer, encrypts when the server can");
    assert!(!encrypted(&format!("{BASE} sslmode=disable")).await.unwrap(), "disable");
    let url = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=require";
    assert!(encrypted(url).await.unwrap(), "{url}");
    // Its self-signed certificate is in no root store: verification refuses it.
    for mode in ["verify-ca", "verify-full"] {
        let e = encrypted(&format!("{BASE} sslmode={mode}")).await.unwrap_err().to_string();
        assert!(e.contains("invalid peer certificate"), "{mode}: {e}");
    }
}
