//! The processes below this one (from /proc).

use std::collections::HashMap;

/// (pid, parent pid) of every process in /proc.
fn parents() -> HashMap<i32, i32> {
    let mut m = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return m;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'.
        let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            m.insert(pid, ppid);
        }
    }
    m
}

/// Every descendant of `root` (children, their children, ...), zombies included.
pub fn descendants(root: i32) -> Vec<i32> {
    let m = parents();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&c, &pp) in &m {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out.sort();
    out
}

/// The children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = parents()
        .into_iter()
        .filter(|&(_, pp)| pp == pid)
        .map(|(c, _)| c)
        .collect();
    v.sort();
    v
}

/// A short description of a process (for reports).
pub fn describe(pid: i32) -> String {
    let cmd = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    format!(
        "{pid} {}",
        cmd.split(')')
            .next()
            .unwrap_or("")
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
    )
}
