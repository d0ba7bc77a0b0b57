//! `shmwire`: the side-by-side benchmark, the live segments, and the removal of stale ones.
//!
//! ```text
//! shmwire bench [--json] [--quick] [--runs N] [--only GROUP] [--plot FILE.svg] [--iceoryx2 PEER_BINARY]
//! shmwire ls
//! shmwire clean [--dry-run]
//! ```

mod bench;

use std::process::ExitCode;

const USAGE: &str = "usage:
  shmwire bench [--json] [--quick] [--runs N] [--only GROUP] [--plot FILE.svg] [--iceoryx2 PEER_BINARY]
      round-trip latency and throughput: shmwire against the floors and the OS paths
  shmwire ls
      this user's shmwire segments in /dev/shm, with kind, size and participants
  shmwire clean [--dry-run]
      remove the segments whose participants are all dead";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&bench::Options {
            runs: value("--runs").and_then(|v| v.parse().ok()).unwrap_or(1),
            only: value("--only"),
            json: flag("--json"),
            quick: flag("--quick"),
            plot: value("--plot"),
            iceoryx2: value("--iceoryx2"),
        }),
        Some("ls") => ls(),
        Some("clean") => clean(flag("--dry-run")),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmwire: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ls() -> std::io::Result<()> {
    let segs = shmwire::segment::list().map_err(std::io::Error::other)?;
    if segs.is_empty() {
        println!("no shmwire segments in /dev/shm");
        return Ok(());
    }
    println!(
        "{:<48} {:<6} {:>12} {:>8}  participants (pid: alive/dead)",
        "name", "kind", "bytes", "creator"
    );
    for s in segs {
        let parts: Vec<String> = s
            .participants
            .iter()
            .map(|(pid, alive)| format!("{pid}:{}", if *alive { "alive" } else { "dead" }))
            .collect();
        let kind = s.kind.map_or("?", |k| k.name());
        println!(
            "{:<48} {:<6} {:>12} {:>8}  {}",
            s.name,
            kind,
            s.size,
            s.creator_pid,
            parts.join(" ")
        );
    }
    Ok(())
}

fn clean(dry_run: bool) -> std::io::Result<()> {
    if dry_run {
        let stale: Vec<_> = shmwire::segment::list()
            .map_err(std::io::Error::other)?
            .into_iter()
            .filter(|s| s.is_stale())
            .collect();
        for s in &stale {
            println!("would remove {}", s.name);
        }
        println!("{} stale segment(s)", stale.len());
        return Ok(());
    }
    let removed = shmwire::cleanup().map_err(std::io::Error::other)?;
    for name in &removed {
        println!("removed {name}");
    }
    println!("{} stale segment(s) removed", removed.len());
    Ok(())
}
