//! `shmwire`: the side-by-side benchmark, the live segments, and the removal of stale ones.
//!
//! ```text
//! shmwire bench [--json] [--quick] [--runs N] [--only GROUP[,GROUP..]] [--no-python]
//!               [--plot FILE.svg] [--plot-throughput FILE.svg] [--iceoryx2 PEER_BINARY]
//! shmwire ls [--json]
//! shmwire clean [--dry-run]
//! shmwire stress [--duration 10s] [--procs N] [--kill-every DUR] [--stop-every DUR]
//!                [--only PRIM[,PRIM..]] [--kills N] [--round DUR] [--seed N] [--interval DUR] [--json]
//! ```
//!
//! Arguments are parsed by clap: an unknown flag or a bad value is an error (exit code 2).

mod bench;
mod stress;

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use std::process::ExitCode;

fn cli() -> Command {
    let groups = bench::GROUPS.join(", ");
    Command::new("shmwire")
        .version(env!("CARGO_PKG_VERSION"))
        .about("shmwire's command: the side-by-side benchmark, and this user's shared-memory segments")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("bench")
                .about(
                    "Round trips, streams, queues and locks: shmwire against the floors, the OS paths, \
                     Python's multiprocessing and (optionally) iceoryx2, measured in interleaved blocks",
                )
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON instead of tables"))
                .arg(
                    Arg::new("quick")
                        .long("quick")
                        .action(ArgAction::SetTrue)
                        .help("A tenth of the time (a smoke run: the figures are noisier)"),
                )
                .arg(
                    Arg::new("runs")
                        .long("runs")
                        .value_name("N")
                        .value_parser(value_parser!(u32).range(1..=100))
                        .default_value("1")
                        .help("Run everything N times; ratios are then the median of the runs, with their range"),
                )
                .arg(
                    Arg::new("only")
                        .long("only")
                        .value_name("GROUP")
                        .value_delimiter(',')
                        .value_parser(clap::builder::PossibleValuesParser::new(bench::GROUPS))
                        .action(ArgAction::Append)
                        .help(format!(
                            "Only these groups (and the groups whose name starts with one); the default is \
                             every group but scaling. Groups: {groups}"
                        )),
                )
                .arg(
                    Arg::new("no-python")
                        .long("no-python")
                        .action(ArgAction::SetTrue)
                        .help("Skip Python's multiprocessing sides (run when python3 is found)"),
                )
                .arg(
                    Arg::new("plot")
                        .long("plot")
                        .value_name("FILE.svg")
                        .help("Write the latency-by-size plot there"),
                )
                .arg(
                    Arg::new("plot-throughput")
                        .long("plot-throughput")
                        .value_name("FILE.svg")
                        .help("Write the throughput-by-size plot there"),
                )
                .arg(
                    Arg::new("iceoryx2")
                        .long("iceoryx2")
                        .value_name("PEER_BINARY")
                        .help("The iceoryx2 peer (built by benches/run.sh), paired with the round trips"),
                ),
        )
        .subcommand(
            Command::new("ls")
                .about("This user's shmwire segments in /dev/shm, with kind, size and participants")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON")),
        )
        .subcommand(stress_command())
        .subcommand(
            Command::new("plot-soak")
                .hide(true)
                .about("The soak's samples (benches/soak.sh's CSV) as an SVG")
                .arg(Arg::new("csv").required(true))
                .arg(Arg::new("svg").required(true)),
        )
        .subcommand(
            Command::new("clean")
                .about("Remove the segments whose participants are all dead")
                .arg(
                    Arg::new("dry-run")
                        .long("dry-run")
                        .action(ArgAction::SetTrue)
                        .help("Only say what would be removed"),
                ),
        )
}

fn stress_command() -> Command {
    let dur = |s: &str| stress::parse_duration(s);
    let prims = stress::PRIMS.join(", ");
    Command::new("stress")
        .about(
            "Load every primitive with 2 to N processes while killing (SIGKILL) and stopping \
             (SIGSTOP) them at random; check each round (no call past its bound, nothing acknowledged \
             lost or duplicated, /dev/shm clean after cleanup(), no process left). Exits 1 on any \
             hang, loss, duplicate, leak or wrong result",
        )
        .arg(
            Arg::new("duration")
                .long("duration")
                .value_name("DUR")
                .value_parser(dur)
                .default_value("10s")
                .help("How long to run: 10s, 2m, 1h"),
        )
        .arg(
            Arg::new("procs")
                .long("procs")
                .value_name("N")
                .value_parser(value_parser!(u64).range(2..=8))
                .default_value("4")
                .help("Processes per round, at most (each round takes 2 to N)"),
        )
        .arg(
            Arg::new("kill-every")
                .long("kill-every")
                .value_name("DUR")
                .value_parser(dur)
                .default_value("1s")
                .help("Mean time between SIGKILLs of a random participant (0: none)"),
        )
        .arg(
            Arg::new("stop-every")
                .long("stop-every")
                .value_name("DUR")
                .value_parser(dur)
                .default_value("200ms")
                .help("Mean time between SIGSTOPs (5 to 100 ms, then SIGCONT) of a random participant (0: none)"),
        )
        .arg(
            Arg::new("only")
                .long("only")
                .value_name("PRIM")
                .value_delimiter(',')
                .value_parser(clap::builder::PossibleValuesParser::new(stress::PRIMS))
                .action(ArgAction::Append)
                .help(format!("Only these primitives (default: all): {prims}")),
        )
        .arg(
            Arg::new("kills")
                .long("kills")
                .value_name("N")
                .value_parser(value_parser!(u64).range(1..))
                .help("Stop after N kills (the duration still bounds the run)"),
        )
        .arg(
            Arg::new("round")
                .long("round")
                .value_name("DUR")
                .value_parser(dur)
                .default_value("1s")
                .help("Length of a round (one primitive, one set of processes)"),
        )
        .arg(Arg::new("seed").long("seed").value_name("N").value_parser(value_parser!(u64)).help("Seed of the random choices"))
        .arg(
            Arg::new("interval")
                .long("interval")
                .value_name("DUR")
                .value_parser(dur)
                .help("Live line every DUR (default: 1s on a terminal, 10s otherwise)"),
        )
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print the summary as JSON"))
}

fn stress_options(m: &ArgMatches) -> stress::Options {
    let d = |k: &str| *m.get_one::<std::time::Duration>(k).expect("default");
    let nonzero = |v: std::time::Duration| (!v.is_zero()).then_some(v);
    stress::Options {
        duration: d("duration"),
        kills: m.get_one::<u64>("kills").copied(),
        procs: *m.get_one::<u64>("procs").expect("default") as usize,
        kill_every: nonzero(d("kill-every")),
        stop_every: nonzero(d("stop-every")),
        only: m
            .get_many::<String>("only")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        round: d("round").max(std::time::Duration::from_millis(100)),
        seed: m.get_one::<u64>("seed").copied(),
        interval: m.get_one::<std::time::Duration>("interval").copied(),
        json: m.get_flag("json"),
    }
}

fn bench_options(m: &ArgMatches) -> bench::Options {
    let s = |k: &str| m.get_one::<String>(k).cloned();
    bench::Options {
        runs: *m.get_one::<u32>("runs").expect("default") as usize,
        only: m
            .get_many::<String>("only")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        json: m.get_flag("json"),
        quick: m.get_flag("quick"),
        plot: s("plot"),
        plot_throughput: s("plot-throughput"),
        iceoryx2: s("iceoryx2"),
        python: !m.get_flag("no-python"),
    }
}

fn main() -> ExitCode {
    // Exits 2 on an unknown flag or a bad value, 0 after --help and --version.
    let m = cli().get_matches();
    let result = match m.subcommand() {
        Some(("bench", m)) => bench::run(&bench_options(m)),
        Some(("ls", m)) => ls(m.get_flag("json")),
        Some(("clean", m)) => clean(m.get_flag("dry-run")),
        Some(("stress", m)) => stress::run(&stress_options(m)),
        Some(("plot-soak", m)) => {
            let a = |k: &str| m.get_one::<String>(k).expect("required").clone();
            stress::soakplot::run(&a("csv"), &a("svg"))
        }
        _ => unreachable!("subcommand_required"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmwire: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ls(json: bool) -> std::io::Result<()> {
    let segs = shmwire::segment::list().map_err(std::io::Error::other)?;
    if json {
        let v: Vec<serde_json::Value> = segs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "kind": s.kind.map(|k| k.name()),
                    "bytes": s.size,
                    "creator_pid": s.creator_pid,
                    "participants": s.participants.iter().map(|(pid, alive)| {
                        serde_json::json!({ "pid": pid, "alive": alive })
                    }).collect::<Vec<_>>(),
                    "stale": s.is_stale(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
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
