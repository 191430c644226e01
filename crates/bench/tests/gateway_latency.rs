//! `viewcast-bench gateway-latency` end to end, at a size that runs in seconds: real upstream and
//! gateway processes, a few clients in two client processes, one JSON report. It needs the
//! `viewcast` binary beside this package's, which `cargo test --workspace` (CI) and
//! `cargo test -p viewcast -p viewcast-bench` build, but `cargo test -p viewcast-bench` alone does
//! not: then it fails and says so.

use std::process::Command;

use serde_json::Value;

#[test]
fn gateway_latency_reports_every_frame_of_a_small_run() {
    let bench = env!("CARGO_BIN_EXE_viewcast-bench");
    let viewcast = std::path::Path::new(bench).with_file_name("viewcast");
    assert!(
        viewcast.exists(),
        "{} is missing: build it first (cargo build -p viewcast, or cargo test --workspace)",
        viewcast.display()
    );
    let out = Command::new(bench)
        .args(["gateway-latency", "--clients", "4", "--client-procs", "2", "--seconds", "1.5", "--warmup", "0.5"])
        .output()
        .expect("running viewcast-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "viewcast-bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(stdout.lines().last().expect("a report line")).expect("JSON report");
    assert_eq!(report["bench"], "gateway-latency");
    assert_eq!(report["client_errors"], 0, "{report}");
    assert_eq!(report["no_kernel_stamp"], 0, "every frame has the kernel's receive timestamp: {report}");
    // The writer changes the upstream in nearly every 20 ms tick; each client gets every one of
    // the window's timestamps once (nothing lost or merged at this size).
    let timestamps = report["timestamps_with_frames"].as_u64().unwrap();
    assert!(timestamps >= 20, "only {timestamps} timestamps in 1.5 s: {report}");
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["frames"].as_u64().unwrap(), 4 * timestamps, "{report}");
    for key in ["added_ms", "added_ms_socket"] {
        let (p50, max) = (report[key]["p50"].as_f64().unwrap(), report[key]["max"].as_f64().unwrap());
        assert!((0.0..=max).contains(&p50) && max < 1000.0, "{key}: {report}");
    }
    // The gateway's own stages were read from its /api/v1/stats for the window.
    assert!(report["gateway_timeline"]["frame_to_written"]["n"].as_u64().unwrap() > 0, "{report}");
}
