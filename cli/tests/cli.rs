//! The `shmwire` command, run as a user would: `bench` (quick), `ls`, `clean`.

use std::process::Command;

fn shmwire(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shmwire"))
        .args(args)
        .env("SHMWIRE_PREFIX", format!("clitest{}", std::process::id()))
        .output()
        .expect("run shmwire")
}

#[test]
fn bench_quick_json_has_every_ratio() {
    let out = shmwire(&["bench", "--quick", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rows = doc["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["name"] == "shmwire, default (adaptive)"
                && r["lat"]["p50_ns"].as_f64().unwrap() > 0.0)
    );
    assert!(
        rows.iter()
            .any(|r| r["group"] == "throughput" && r["thr"]["msgs_per_s"].as_f64().unwrap() > 0.0)
    );
    let ratios = doc["ratios"].as_array().unwrap();
    for what in [
        "RTT 8 B: shmwire default / spinning floor",
        "64 B msgs/s: shmwire / pipe",
        "1 MiB GB/s: shmwire / Unix socket",
    ] {
        assert!(
            ratios.iter().any(|r| r["what"] == what),
            "missing ratio {what}"
        );
    }
    assert!(doc["machine"].as_str().unwrap().contains("CPUs"));
}

#[test]
fn bench_table_and_plot() {
    let plot = std::env::temp_dir().join(format!("shmwire-plot-{}.svg", std::process::id()));
    let out = shmwire(&[
        "bench",
        "--quick",
        "--only",
        "rtt-by-size",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Round trip by message size"), "{text}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let _ = std::fs::remove_file(plot);
}

#[test]
fn ls_and_clean_on_an_empty_prefix() {
    let out = shmwire(&["ls"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no shmwire segments"));
    let out = shmwire(&["clean", "--dry-run"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 stale segment(s)"));
}

#[test]
fn bad_usage_is_exit_code_2() {
    let out = shmwire(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
