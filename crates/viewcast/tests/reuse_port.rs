//! `--reuse-port`: two `viewcast serve` processes bound to one HTTP address both accept
//! connections (the kernel spreads them), and a process without the flag cannot take the address.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{dir, http_get_json, Proc};

/// A `viewcast serve --reuse-port` whose only table is `name`, listening on `listen`.
async fn serve_table(name: &str, listen: &str) -> Proc {
    let sql = dir().join(format!("{name}.sql"));
    std::fs::write(&sql, format!("CREATE TABLE {name} (n bigint);")).unwrap();
    let log = dir().join(format!("{name}.log"));
    let args =
        ["serve", "--sql", sql.to_str().unwrap(), "--listen", listen, "--pgwire-listen", "127.0.0.1:0", "--reuse-port"];
    Proc::start(&args, &log).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_a_port_and_a_third_without_the_flag_is_refused() {
    let a = serve_table("only_a", "127.0.0.1:0").await;
    let b = serve_table("only_b", &a.http.to_string()).await;
    assert_eq!(a.http, b.http);

    // Each connection comes from a new source port, so the kernel's hash picks either process.
    let mut answered_by = BTreeSet::new();
    for _ in 0..64 {
        let views = http_get_json(a.http, "/api/v1/views").await;
        let names: Vec<&str> = views["views"]
            .as_array()
            .unwrap_or_else(|| panic!("not a view list: {views}"))
            .iter()
            .filter_map(|v| v["name"].as_str())
            .filter(|n| n.starts_with("only_"))
            .collect();
        assert_eq!(names.len(), 1, "one server answers each request: {views}");
        answered_by.insert(names[0].to_string());
    }
    assert_eq!(answered_by, BTreeSet::from(["only_a".to_string(), "only_b".to_string()]), "both servers accepted");

    let sql = dir().join("third.sql");
    std::fs::write(&sql, "CREATE TABLE third (n bigint);").unwrap();
    let third = tokio::process::Command::new(env!("CARGO_BIN_EXE_viewcast"))
        .args(["serve", "--sql", sql.to_str().unwrap(), "--pgwire-listen", "127.0.0.1:0", "--listen"])
        .arg(a.http.to_string())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), third).await.expect("the third server exits").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bound without --reuse-port: {stderr}");
    assert!(stderr.contains(&format!("binding {}", a.http)) && stderr.contains("--reuse-port"), "{stderr}");
    a.kill().await;
    b.kill().await;
}
