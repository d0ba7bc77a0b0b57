//! `shmwire plot-soak SOAK.csv OUT.svg`: the soak's samples (benches/soak.sh) as an SVG drawn
//! without dependencies, as the bench's plots are: memory (MiB) over time on the left axis, segment
//! count and participants on the right.

use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 420.0;
const M: f64 = 64.0;
/// (CSV column, label, colour, right axis).
const SERIES: &[(&str, &str, &str, bool)] = &[
    (
        "supervisor_rss_kib",
        "supervisor RSS (MiB)",
        "#d62728",
        false,
    ),
    (
        "supervisor_private_kib",
        "supervisor private memory (MiB)",
        "#e377c2",
        false,
    ),
    (
        "participant_rss_max_kib",
        "largest participant RSS (MiB)",
        "#1f77b4",
        false,
    ),
    (
        "participants_rss_kib",
        "participants' RSS, summed (MiB)",
        "#9467bd",
        false,
    ),
    ("shm_bytes", "/dev/shm bytes (MiB)", "#2ca02c", false),
    ("shm_segments", "segments (right axis)", "#ff7f0e", true),
    ("participants", "processes (right axis)", "#8c564b", true),
];

pub fn run(csv: &str, out: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(csv)?;
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| {
            l.split(',')
                .map(|v| v.trim().parse().unwrap_or(0.0))
                .collect()
        })
        .filter(|r: &Vec<f64>| r.len() == head.len())
        .collect();
    let col = |name: &str| head.iter().position(|h| *h == name);
    let t = col("seconds").ok_or_else(|| std::io::Error::other("no seconds column"))?;
    let scale = |name: &str| {
        if name.ends_with("_kib") {
            1.0 / 1024.0
        } else if name == "shm_bytes" {
            1.0 / (1 << 20) as f64
        } else {
            1.0
        }
    };
    let xmax = rows.iter().map(|r| r[t]).fold(1.0, f64::max) / 60.0;
    let (mut lmax, mut rmax) = (1.0f64, 1.0f64);
    for &(name, _, _, right) in SERIES {
        if let Some(c) = col(name) {
            let m = rows.iter().map(|r| r[c] * scale(name)).fold(0.0, f64::max);
            if right {
                rmax = rmax.max(m)
            } else {
                lmax = lmax.max(m)
            }
        }
    }
    let (lmax, rmax) = (nice(lmax), nice(rmax));
    let x = |sec: f64| M + sec / 60.0 / xmax * (W - 2.0 * M);
    let y = |v: f64, top: f64| H - M - v / top * (H - 2.0 * M);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Soak: shmwire stress, sampled every minute</text>"#,
        W / 2.0
    );
    for k in 0..=5 {
        let (lv, rv) = (lmax * k as f64 / 5.0, rmax * k as f64 / 5.0);
        let yy = y(lv, lmax);
        let _ = writeln!(
            s,
            r##"<line x1="{M}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{lv:.0}</text><text x="{}" y="{}">{rv:.0}</text>"##,
            W - M,
            M - 6.0,
            yy + 4.0,
            W - M + 6.0,
            yy + 4.0
        );
    }
    for k in 0..=6 {
        let m = xmax * k as f64 / 6.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{m:.0} min</text>"#,
            x(m * 60.0),
            H - M + 18.0
        );
    }
    for (i, &(name, label, c, right)) in SERIES.iter().enumerate() {
        let Some(ci) = col(name) else { continue };
        let top = if right { rmax } else { lmax };
        let d: Vec<String> = rows
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r[t]), y(r[ci] * scale(name), top)))
            .collect();
        let dash = if right {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
            d.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{c}">{label}</text>"#,
            M + 10.0,
            M - 14.0 + 15.0 * i as f64
        );
    }
    s.push_str("</svg>\n");
    std::fs::write(out, s)
}

/// A round upper bound for an axis.
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}
