//! SVGs, drawn without dependencies: round-trip latency by message size, and one-way throughput by
//! message size, for each path (log-log).

use super::Row;
use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
const M: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// The latency plot: the `rtt` (8 B) and `rtt-by-size` rows, median round trip in µs.
pub fn latency_svg(rows: &[Row]) -> String {
    let pts: Vec<(&str, usize, f64)> = rows
        .iter()
        .filter(|r| r.group == "rtt-by-size" || (r.group == "rtt" && r.size == 8))
        .filter_map(|r| r.lat.map(|l| (r.name.as_str(), r.size, l.p50_ns / 1000.0)))
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.group == "rtt-by-size") {
        if !names.contains(&r.name.as_str()) {
            names.push(r.name.as_str());
        }
    }
    svg(
        "Round trip by message size (median, log-log)",
        "µs",
        &names,
        &pts,
    )
}

/// The throughput plot: the `throughput` rows, GB/s counted at the receiver.
pub fn throughput_svg(rows: &[Row]) -> String {
    let pts: Vec<(&str, usize, f64)> = rows
        .iter()
        .filter(|r| r.group == "throughput")
        .filter_map(|r| r.thr.map(|t| (r.name.as_str(), r.size, t.gb_per_s)))
        .filter(|p| p.2 > 0.0)
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for p in &pts {
        if !names.contains(&p.0) {
            names.push(p.0);
        }
    }
    svg(
        "One-way throughput by message size (median, log-log)",
        "GB/s",
        &names,
        &pts,
    )
}

fn svg(title: &str, unit: &str, names: &[&str], pts: &[(&str, usize, f64)]) -> String {
    let smin = pts.iter().map(|p| p.1).min().unwrap_or(8).max(1);
    let smax = pts.iter().map(|p| p.1).max().unwrap_or(65536).max(smin * 2);
    let (xmin, xmax) = ((smin as f64).log2(), (smax as f64).log2());
    let ymin = pts
        .iter()
        .map(|p| p.2)
        .fold(f64::MAX, f64::min)
        .max(1e-4)
        .log10()
        .floor();
    let ymax = pts
        .iter()
        .map(|p| p.2)
        .fold(0.0, f64::max)
        .max(1e-3)
        .log10()
        .ceil();
    let x = |size: usize| M + ((size as f64).log2() - xmin) / (xmax - xmin) * (W - 2.0 * M);
    let y = |us: f64| H - M - (us.log10() - ymin) / (ymax - ymin).max(1e-9) * (H - 2.0 * M);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{title}</text>"#,
        W / 2.0
    );
    for e in (ymin as i32)..=(ymax as i32) {
        let v = 10f64.powi(e);
        let _ = writeln!(
            s,
            r##"<line x1="{M}" x2="{}" y1="{}" y2="{}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{} {unit}</text>"##,
            W - M,
            y(v),
            y(v),
            M - 6.0,
            y(v) + 4.0,
            v
        );
    }
    let mut sizes: Vec<usize> = pts.iter().map(|p| p.1).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for size in sizes {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(size),
            H - M + 18.0,
            super::report::size_label(size)
        );
    }
    for (i, name) in names.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let mut line: Vec<(usize, f64)> = pts
            .iter()
            .filter(|p| p.0 == *name)
            .map(|p| (p.1, p.2))
            .collect();
        line.sort_by_key(|p| p.0);
        let d: Vec<String> = line
            .iter()
            .map(|(z, v)| format!("{:.1},{:.1}", x(*z), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            d.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{c}">{name}</text>"#,
            M + 10.0,
            M + 16.0 * i as f64
        );
    }
    s.push_str("</svg>\n");
    s
}
