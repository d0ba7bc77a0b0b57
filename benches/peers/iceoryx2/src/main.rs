//! iceoryx2 publish-subscribe ping-pong of a u64 with busy-polling receivers: the workload of
//! `../shared/baselines/iceoryx2`, printing one line `shmwire bench --iceoryx2` parses:
//! `lat iceoryx2 iters=N mean_ns=.. median_ns=.. p99_ns=.. p999_ns=..`
//!
//! Usage: `shmwire-peer-iceoryx2 [iters]` (starts itself again as the echo side with `--echo`).

use iceoryx2::prelude::*;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn core::error::Error>> {
    set_log_level(LogLevel::Error);
    let args: Vec<String> = std::env::args().collect();
    let echo = args.iter().any(|a| a == "--echo");
    let iters: u64 = args.iter().skip(1).find(|a| !a.starts_with("--")).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    // Unique service names per run, so concurrent or stale runs never meet.
    let tag = std::env::var("SHMWIRE_ICE_TAG").unwrap_or_else(|_| std::process::id().to_string());
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let ping = node.service_builder(&format!("shmwire-bench/{tag}/ping").as_str().try_into()?).publish_subscribe::<u64>().open_or_create()?;
    let pong = node.service_builder(&format!("shmwire-bench/{tag}/pong").as_str().try_into()?).publish_subscribe::<u64>().open_or_create()?;
    if echo {
        let sub = ping.subscriber_builder().create()?;
        let publ = pong.publisher_builder().create()?;
        loop {
            match sub.receive()? {
                Some(s) => {
                    let v = *s;
                    drop(s);
                    publ.loan_uninit()?.write_payload(v).send()?;
                    if v == u64::MAX {
                        return Ok(());
                    }
                }
                None => core::hint::spin_loop(),
            }
        }
    }
    let publ = ping.publisher_builder().create()?;
    let sub = pong.subscriber_builder().create()?;
    let mut child = std::process::Command::new(std::env::current_exe()?).arg("--echo").env("SHMWIRE_ICE_TAG", &tag).spawn()?;
    // Handshake: send 0 until it comes back, then drain.
    'hs: loop {
        publ.loan_uninit()?.write_payload(0).send()?;
        std::thread::sleep(Duration::from_millis(2));
        if sub.receive()?.is_some() {
            break 'hs;
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    while sub.receive()?.is_some() {}
    let warm = iters / 10 + 100;
    let mut samples = Vec::with_capacity(iters as usize);
    let mut t0 = Instant::now();
    for i in 1..=(warm + iters) {
        if i == warm + 1 {
            t0 = Instant::now();
        }
        let a = Instant::now();
        publ.loan_uninit()?.write_payload(i).send()?;
        loop {
            match sub.receive()? {
                Some(s) if *s == i => break,
                Some(_) => {}
                None => core::hint::spin_loop(),
            }
        }
        if i > warm {
            samples.push(a.elapsed().as_nanos() as u64);
        }
    }
    let total = t0.elapsed().as_nanos() as f64;
    publ.loan_uninit()?.write_payload(u64::MAX).send()?;
    child.wait()?;
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "lat iceoryx2 iters={iters} mean_ns={:.0} median_ns={} p99_ns={} p999_ns={}",
        total / iters as f64,
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    Ok(())
}
