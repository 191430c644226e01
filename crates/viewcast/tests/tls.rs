//! TLS on the Postgres wire, both ways, with real processes and a certificate authority made
//! here: `viewcast serve --pg-tls-cert/--pg-tls-key` serves psql and viewcast's own upstream
//! client (each `sslmode`), and a gateway follows such an upstream with `verify-full`, keeps
//! retrying while the upstream presents a certificate it does not trust, and recovers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use viewcast_upstream::{UpstreamConfig, UpstreamError};

/// psql with `conninfo`, running `sql` then `\conninfo` (which says whether TLS is in use).
fn psql(conninfo: &str, sql: &str) -> (bool, String) {
    let out = std::process::Command::new("psql")
        .args([conninfo, "-X", "-A", "-t", "-c", sql, "-c", "\\conninfo"])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Connects with viewcast's upstream client and counts the rows of `totals`.
async fn count_totals(conn: &str) -> Result<i64, UpstreamError> {
    let client = viewcast_upstream::connect(&UpstreamConfig::new(conn, "totals")).await?;
    let rows = client.simple_query("SELECT count(*) FROM totals").await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .expect("a row"))
}

fn tls_flags((cert, key): &(String, String)) -> [&str; 4] {
    ["--pg-tls-cert", cert, "--pg-tls-key", key]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_with_each_sslmode() {
    let ca = TestCa::new("modes");
    let other_ca = TestCa::new("modes-other");
    let server_cert = ca.server_cert(&["localhost", "127.0.0.1"]);
    let server = Proc::upstream_with(free_port(), "tls-modes", &tls_flags(&server_cert)).await;
    let port = server.pg.port();
    let base = format!("host=localhost port={port} user=materialize dbname=materialize");

    // psql verifies our certificate and host name, and says the session is encrypted.
    let (ok, out) = psql(&format!("{base} sslmode=verify-full sslrootcert={}", ca.cert), "SELECT count(*) FROM totals");
    assert!(ok && out.starts_with("2\n") && out.contains("SSL connection"), "{out}");
    // TLS is optional here: plain text still works.
    let (ok, out) = psql(&format!("{base} sslmode=disable"), "SELECT count(*) FROM totals");
    assert!(ok && out.starts_with("2\n") && !out.contains("SSL connection"), "{out}");

    // viewcast's own client, in every mode.
    for mode in ["disable", "prefer", "require"] {
        assert_eq!(count_totals(&format!("{base} sslmode={mode}")).await.unwrap(), 2, "sslmode={mode}");
    }
    for mode in ["verify-ca", "verify-full"] {
        let conn = format!("{base} sslmode={mode} sslrootcert={}", ca.cert);
        assert_eq!(count_totals(&conn).await.unwrap(), 2, "sslmode={mode}");
        let url = format!("postgres://materialize@127.0.0.1:{port}/materialize?sslmode={mode}&sslrootcert={}", ca.cert);
        assert_eq!(count_totals(&url).await.unwrap(), 2, "{url}");
    }
    // verify-ca checks the chain only; verify-full also the name (the address is the same).
    let renamed =
        format!("host=db.example hostaddr=127.0.0.1 port={port} user=materialize sslrootcert={} sslmode=", ca.cert);
    assert_eq!(count_totals(&format!("{renamed}verify-ca")).await.unwrap(), 2);
    let e = count_totals(&format!("{renamed}verify-full")).await.unwrap_err().to_string();
    assert!(e.contains("certificate") && e.contains("db.example"), "{e}");
    // Another authority's root: refused, also by `require` with a root file (as libpq).
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = count_totals(&format!("{base} sslmode={mode} sslrootcert={}", other_ca.cert)).await.unwrap_err();
        assert!(e.to_string().contains("invalid peer certificate: UnknownIssuer"), "sslmode={mode}: {e}");
    }
    // The built-in (Mozilla) roots do not know our test CA either.
    for roots in ["", " sslrootcert=system"] {
        let e = count_totals(&format!("{base} sslmode=verify-full{roots}")).await.unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{roots}: {e}");
    }

    // Settings errors say what is wrong and never show the password.
    let secret = "pw-not-to-be-shown";
    for (conn, expected) in [
        (format!("{base} password={secret} sslmode=verify-everything"), "unknown sslmode \"verify-everything\""),
        (format!("{base} password={secret} sslmode=verify-ca sslrootcert=/nonexistent.pem"), "/nonexistent.pem"),
        (format!("postgres://materialize:{secret}@localhost:{port}/materialize?sslmode=nope"), "unknown sslmode"),
        (format!("{base} password={secret} frobnicate=1"), "unknown option `frobnicate`"),
    ] {
        let e = count_totals(&conn).await.unwrap_err().to_string();
        assert!(e.contains(expected) && !e.contains(secret), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_refuses_plaintext_sessions() {
    let ca = TestCa::new("required");
    let server_cert = ca.server_cert(&["localhost", "127.0.0.1"]);
    let mut flags = tls_flags(&server_cert).to_vec();
    flags.push("--pg-tls-required");
    let server = Proc::upstream_with(free_port(), "tls-required", &flags).await;
    let base = format!("host=127.0.0.1 port={} user=materialize dbname=materialize", server.pg.port());

    let (ok, out) = psql(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!ok && out.contains("this server requires TLS"), "{out}");
    let e = count_totals(&format!("{base} sslmode=disable")).await.unwrap_err().to_string();
    assert!(e.contains("this server requires TLS"), "{e}");

    let (ok, out) = psql(&format!("{base} sslmode=require"), "SELECT count(*) FROM totals");
    assert!(ok && out.starts_with("2\n") && out.contains("SSL connection"), "{out}");
    // libpq's default (prefer) upgrades.
    assert_eq!(count_totals(&base).await.unwrap(), 2);

    // Bytes pipelined after an SSLRequest would be taken as sent over TLS: the server hangs up
    // instead of answering it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.pg).await.unwrap();
    let ssl_request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    tcp.write_all(&[&ssl_request[..], &b"Q\0\0\0\x0dSELECT 1\0"[..]].concat()).await.unwrap();
    let mut answer = Vec::new();
    // A reset is a hang-up too.
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await.unwrap();
    assert!(answer.is_empty(), "answered {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_follows_a_tls_upstream_and_rides_out_an_untrusted_certificate() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let ca = TestCa::new("gw");
        let rogue = TestCa::new("gw-rogue");
        let (good, bad) = (ca.server_cert(&["localhost"]), rogue.server_cert(&["localhost"]));
        let port = free_port();
        let upstream = Proc::upstream_with(port, "tls-upstream-1", &tls_flags(&good)).await;
        let url = format!(
            "postgres://materialize:pw-not-to-be-shown@localhost:{port}/materialize?sslmode=verify-full&sslrootcert={}",
            ca.cert
        );
        let mut gateway = Proc::start(&gateway_args(&url), &dir().join("tls-gateway.log")).await;
        let client = Client::start(gateway.http, "totals");
        let writer = start_writer(Arc::new(Mutex::new(upstream.pg)));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        writer.stop().await;
        let expected = settle(&client, upstream.pg).await;
        assert!(!expected.is_empty());

        // The upstream comes back with a certificate of an authority the gateway does not trust:
        // the gateway says why it cannot connect, keeps serving and keeps trying.
        upstream.kill().await;
        let upstream = Proc::upstream_with(port, "tls-upstream-rogue", &tls_flags(&bad)).await;
        eventually("the gateway to report the certificate", Duration::from_secs(30), || {
            gateway.log().contains("invalid peer certificate: UnknownIssuer")
        })
        .await;
        assert!(gateway.child.try_wait().unwrap().is_none(), "the gateway exited:\n{}", gateway.log());
        assert_eq!(client.lock().unwrap().state, expected, "clients keep the last complete contents");
        upstream.kill().await;

        // Trusted again (a fresh upstream: new contents): the gateway follows it.
        let upstream = Proc::upstream_with(port, "tls-upstream-2", &tls_flags(&good)).await;
        pg(upstream.pg).await.unwrap().simple_query("INSERT INTO t VALUES ('k9', 42)").await.unwrap();
        let after = settle(&client, upstream.pg).await;
        assert_ne!(after, expected);
        {
            let c = client.lock().unwrap();
            assert_eq!((c.snapshots, c.resyncs), (1, 0), "one snapshot, never a resync");
        }
        assert!(!gateway.log().contains("pw-not-to-be-shown"), "the password was logged");
        let shown = pg(gateway.pg).await.unwrap().simple_query("SHOW CREATE SOURCE totals").await.unwrap();
        let shown = match &shown[1] {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(1).unwrap().to_string(),
            other => panic!("{other:?}"),
        };
        assert!(shown.contains("materialize:<redacted>@localhost") && shown.contains("sslmode=verify-full"), "{shown}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refuses_to_start_on_an_untrusted_upstream() {
    let (ca, rogue) = (TestCa::new("start"), TestCa::new("start-rogue"));
    let port = free_port();
    let _upstream =
        Proc::upstream_with(port, "tls-start-upstream", &tls_flags(&rogue.server_cert(&["localhost"]))).await;
    let url = format!(
        "postgres://materialize:pw-not-to-be-shown@localhost:{port}/materialize?sslmode=verify-full&sslrootcert={}",
        ca.cert
    );
    let (status, out) = run_to_exit(&gateway_args(&url), "tls-start-gateway").await;
    assert!(!status.success());
    assert!(out.contains("invalid peer certificate: UnknownIssuer"), "{out}");
    assert!(!out.contains("pw-not-to-be-shown"), "the password was shown: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_a_key_that_is_not_its_certificates() {
    let ca = TestCa::new("mismatch");
    let (cert, _) = ca.server_cert(&["localhost"]);
    let (_, other_key) = ca.server_cert(&["other.example"]);
    let args = ["serve", "--listen", "127.0.0.1:0", "--pgwire-listen", "127.0.0.1:0"];
    let (status, out) = run_to_exit(&[&args[..], &tls_flags(&(cert, other_key))[..]].concat(), "tls-mismatch").await;
    assert!(!status.success());
    assert!(out.contains("loading --pg-tls-cert/--pg-tls-key") && out.contains("TLS certificate and key"), "{out}");
}
