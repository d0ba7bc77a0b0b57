//! iceoryx2 publish-subscribe ping-pong of a u64 with busy-polling receivers (the workload of
//! `../shared/baselines/iceoryx2`), as a side of `shmwire bench --iceoryx2`, paired with the other
//! round trips: it speaks the bench's line protocol (`cli/src/bench/external.rs`).
//!
//! Usage: `shmwire-peer-iceoryx2 --serve` (starts itself again as the echo side with `--echo`).
//! stdin: `block SECONDS` (a warm-up of a tenth of it, then round trips in batches of 16 for that
//! long) or `items N` (N round trips); each answered on stdout with `ok ROUND_TRIPS SECONDS`;
//! `quit` or the end of stdin ends both processes. Between blocks the echo side is parked (it sleeps
//! reading its stdin), so that it does not spin while the bench measures something else.

use iceoryx2::prelude::*;
use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

/// `SHMWIRE_BENCH_PIN=SERVER,ECHO`: the CPUs the bench wants the two processes on.
fn pin(which: usize) {
    let cpu = std::env::var("SHMWIRE_BENCH_PIN").ok().and_then(|v| {
        v.split(',')
            .nth(which)
            .and_then(|c| c.parse::<usize>().ok())
    });
    if let Some(cpu) = cpu {
        // SAFETY: cpu_set_t is plain data; sched_setaffinity gets a valid pointer and size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

const PARK: u64 = u64::MAX - 1;
const STOP: u64 = u64::MAX;

/// Publishes `v`.
macro_rules! send {
    ($p:expr, $v:expr) => {
        $p.loan_uninit()?.write_payload($v).send()?
    };
}

/// Waits (busy-polling) for the sample `v`, skipping others.
macro_rules! expect {
    ($s:expr, $v:expr) => {
        loop {
            match $s.receive()? {
                Some(x) if *x == $v => break,
                Some(_) => {}
                None => core::hint::spin_loop(),
            }
        }
    };
}

fn main() -> Result<(), Box<dyn core::error::Error>> {
    set_log_level(LogLevel::Error);
    let echo = std::env::args().any(|a| a == "--echo");
    pin(if echo { 1 } else { 0 });
    // Unique service names per run, so concurrent or stale runs never meet.
    let tag = std::env::var("SHMWIRE_ICE_TAG").unwrap_or_else(|_| std::process::id().to_string());
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let ping = node
        .service_builder(&format!("shmwire-bench/{tag}/ping").as_str().try_into()?)
        .publish_subscribe::<u64>()
        .open_or_create()?;
    let pong = node
        .service_builder(&format!("shmwire-bench/{tag}/pong").as_str().try_into()?)
        .publish_subscribe::<u64>()
        .open_or_create()?;
    if echo {
        let sub = ping.subscriber_builder().create()?;
        let publ = pong.publisher_builder().create()?;
        let mut stdin = std::io::stdin();
        loop {
            match sub.receive()? {
                Some(s) => {
                    let v = *s;
                    drop(s);
                    send!(publ, v);
                    // Parked after PARK until the server writes a byte (or goes away).
                    if v == STOP || (v == PARK && stdin.read(&mut [0u8])? == 0) {
                        return Ok(());
                    }
                }
                None => core::hint::spin_loop(),
            }
        }
    }
    let publ = ping.publisher_builder().create()?;
    let sub = pong.subscriber_builder().create()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--echo")
        .env("SHMWIRE_ICE_TAG", &tag)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let mut wake = child.stdin.take().expect("piped");
    // Handshake: send 0 until it comes back, then drain.
    loop {
        send!(publ, 0);
        std::thread::sleep(Duration::from_millis(2));
        if sub.receive()?.is_some() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    while sub.receive()?.is_some() {}
    let mut i: u64 = 0;
    macro_rules! trip {
        () => {{
            i += 1;
            send!(publ, i);
            expect!(sub, i);
        }};
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut parked = false;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if parked {
            wake.write_all(&[1])?;
            wake.flush()?;
            parked = false;
        }
        let (ops, secs) = match f.as_slice() {
            ["block", s] => {
                let d = Duration::from_secs_f64(s.parse()?);
                let warm = Instant::now();
                let mut k = 0;
                while k < 8 || warm.elapsed() < d / 10 {
                    trip!();
                    k += 1;
                }
                let (start, mut n) = (Instant::now(), 0u64);
                while start.elapsed() < d {
                    for _ in 0..16 {
                        trip!();
                    }
                    n += 16;
                }
                let secs = start.elapsed().as_secs_f64();
                send!(publ, PARK);
                expect!(sub, PARK);
                parked = true;
                (n, secs)
            }
            ["items", n] => {
                let n: u64 = n.parse()?;
                let start = Instant::now();
                for _ in 0..n {
                    trip!();
                }
                (n, start.elapsed().as_secs_f64())
            }
            _ => break,
        };
        writeln!(out, "ok {ops} {secs:.9}")?;
        out.flush()?;
    }
    send!(publ, STOP);
    child.wait()?;
    Ok(())
}
