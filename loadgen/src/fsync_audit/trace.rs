//! Reading an `strace -f -tt -T -y` trace: the system calls the audit needs, with their file
//! paths, times and data.

use std::collections::HashMap;

/// The syscalls traced: the journal's writes and syncs, the replies, the opens.
pub const TRACED: &str = "trace=fsync,fdatasync,pwrite64,write,sendto,writev,openat";

/// One traced system call of interest.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub pid: u32,
    pub name: String,
    /// The file descriptor's path as `-y` prints it (`/tmp/d/journal.db-wal`,
    /// `TCP:[…]`, `socket:[…]`).
    pub path: String,
    /// Entry and return, microseconds since midnight (from `-tt` and `-T`).
    pub start_us: i64,
    pub end_us: i64,
    /// The return value (negative on error).
    pub ret: i64,
    /// The data written (strace's escapes decoded), for write-like calls.
    pub data: Vec<u8>,
}

/// Parses an `strace -f -tt -T -y` output (with pids, as `-o FILE -f` writes them) into the calls
/// of interest, joining `<unfinished …>` and `<… resumed>` halves.
pub fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: HashMap<u32, (String, i64)> = HashMap::new();
    let mut day = 0i64;
    let mut last = 0i64;
    for line in text.lines() {
        // strace pads the pid to five columns: `812   09:00:00.000100 …`.
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((ts, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (Ok(pid), Some(mut ts)) = (pid.parse::<u32>(), parse_clock(ts)) else {
            continue;
        };
        ts += day;
        if ts + 43_200_000_000 < last {
            // Past midnight.
            day += 86_400_000_000;
            ts += 86_400_000_000;
        }
        last = last.max(ts);
        let (head, start) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((head, start)) = pending.remove(&pid) else {
                continue;
            };
            let tail = resumed
                .split_once(" resumed>")
                .map(|(_, t)| t)
                .unwrap_or("");
            (head + tail, start)
        } else if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, (head.to_string(), ts));
            continue;
        } else {
            (rest.to_string(), ts)
        };
        if let Some(call) = parse_call(pid, &head, start, ts) {
            calls.push(call);
        }
    }
    calls
}

/// `HH:MM:SS.uuuuuu` → microseconds since midnight.
fn parse_clock(ts: &str) -> Option<i64> {
    let (hms, frac) = ts.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let micros: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// One complete line `name(args) = ret <dur>`.
fn parse_call(pid: u32, line: &str, start: i64, printed: i64) -> Option<Call> {
    let open = line.find('(')?;
    let name = &line[..open];
    if !matches!(
        name,
        "fsync" | "fdatasync" | "pwrite64" | "write" | "sendto" | "writev" | "pwritev" | "pwritev2"
    ) {
        return None;
    }
    let args = &line[open + 1..];
    // The fd and its path: `12</tmp/x/journal.db-wal>` (paths may hold `>`: take the first `>,`
    // or `>)`).
    let lt = args.find('<')?;
    let after = &args[lt + 1..];
    let close = after
        .find(">, ")
        .or_else(|| after.find(">)"))
        .unwrap_or(after.len());
    let path = after[..close].to_string();
    let (body, result) = line.rsplit_once(" = ")?;
    let mut result_words = result.split_whitespace();
    let ret: i64 = result_words.next()?.parse().ok()?;
    let dur_us = result
        .rsplit_once('<')
        .and_then(|(_, d)| d.trim_end_matches('>').parse::<f64>().ok())
        .map(|d| (d * 1e6).round() as i64);
    let end = dur_us.map_or(printed, |d| start + d);
    let data = quoted_strings(&body[open + 1..]);
    Some(Call {
        pid,
        name: name.to_string(),
        path,
        start_us: start,
        end_us: end,
        ret,
        data,
    })
}

/// Every quoted string of `args`, decoded and concatenated.
pub(super) fn quoted_strings(args: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = args.as_bytes();
    let mut i = 0;
    let mut inside = false;
    while i < bytes.len() {
        let c = bytes[i];
        if !inside {
            if c == b'"' {
                inside = true;
            } else if c == b'<' {
                // Skip a `<path>` annotation: paths may hold quotes.
                while i < bytes.len() && bytes[i] != b'>' {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => inside = false,
            b'\\' if i + 1 < bytes.len() => {
                i += 1;
                match bytes[i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let hex = std::str::from_utf8(&bytes[i + 1..(i + 3).min(bytes.len())])
                            .unwrap_or("");
                        out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        i += 2;
                    }
                    b'0'..=b'7' => {
                        let mut v: u32 = 0;
                        let mut n = 0;
                        while n < 3 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                            v = v * 8 + u32::from(bytes[i] - b'0');
                            i += 1;
                            n += 1;
                        }
                        out.push(v as u8);
                        continue;
                    }
                    other => out.push(other),
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}
