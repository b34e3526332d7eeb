//! Secrets given on the command line, out of the process list.
//!
//! `tallow receive CODE` is what people type (the sender prints it), but any
//! local user can read `/proc/PID/cmdline` for as long as the process runs.
//! So, on Linux, once the arguments are parsed, the process overwrites the
//! secret ones in its own argument memory with `x`s of the same length
//! (keeping the NULs between arguments, so the rest still shows), as
//! database clients do with passwords: the code (`tallow receive CODE`,
//! `tallow send --code CODE`), `--relay-password`, the relay's
//! `--password` and a `tallow send --text` message, in both the `--flag
//! VALUE` and `--flag=VALUE` forms.
//!
//! How: `/proc/self/stat` gives where the argument memory starts and ends
//! (fields 48 and 49); the bytes there are read through `/proc/self/mem`,
//! checked to be exactly the arguments that were parsed, and the secret
//! bytes are overwritten with positioned writes to `/proc/self/mem`.
//!
//! Soundness, without `unsafe`: writing our own memory through
//! `/proc/self/mem` bypasses the compiler's view of it, so it must not touch
//! memory that Rust code holds a reference into. The argument strings live
//! on the initial stack, outside every Rust allocation; the only Rust code
//! that reads them is `std::env::args_os`, which copies them. [`scrub`] runs
//! in `main` right after those copies were made and parsed, while the
//! process has a single thread, so nothing reads them during the write; and
//! the write keeps every string's length and terminating NUL, so a later
//! `args_os` still reads valid strings (of `x`s).
//!
//! What remains: the arguments are readable from `exec` until the scrub
//! (a few milliseconds; a `ps` at that instant, or a process-accounting or
//! audit tool that records command lines at `exec`, sees the secret), and
//! the shell may keep the command in its history. `TALLOW_CODE` (readable
//! only by the same user, in `/proc/PID/environ`) or typing the code at the
//! prompt avoids both.

// The pure parts are used on Linux only, and tested everywhere.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::ffi::OsString;
use std::ops::Range;

/// Overwrite the secret arguments: the value of each of `flags` (both
/// forms) and any argument equal to one of `values` (a positional code).
/// `args` are the arguments exactly as parsed (`std::env::args_os()`).
/// With nothing to hide this does nothing. On failure the secret may still
/// be visible; the caller warns and goes on.
#[cfg(target_os = "linux")]
pub fn scrub(args: &[OsString], flags: &[&str], values: &[&str]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    let spans = secret_spans(&args, flags, &values);
    if spans.is_empty() {
        return Ok(());
    }
    overwrite(&args, &spans)
}

/// Elsewhere there is no `/proc/self/mem`: nothing is done.
#[cfg(not(target_os = "linux"))]
pub fn scrub(_args: &[OsString], _flags: &[&str], _values: &[&str]) -> std::io::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn overwrite(args: &[&[u8]], spans: &[(usize, Range<usize>)]) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::FileExt;
    let stat = std::fs::read("/proc/self/stat")?;
    let (start, end) = arg_bounds(&stat).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidData,
            "/proc/self/stat has no argument bounds",
        )
    })?;
    let expected = joined(args);
    if end - start != expected.len() as u64 {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "the argument memory is not the arguments as parsed",
        ));
    }
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    let mut region = vec![0u8; expected.len()];
    mem.read_exact_at(&mut region, start)?;
    if region != expected {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "the argument memory is not the arguments as parsed",
        ));
    }
    for range in offsets(args, spans) {
        let filler = vec![b'x'; range.len()];
        mem.write_all_at(&filler, start + range.start as u64)?;
    }
    Ok(())
}

/// `arg_start` and `arg_end` (fields 48 and 49) from `/proc/PID/stat`. The
/// second field (the command name) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn arg_bounds(stat: &[u8]) -> Option<(u64, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // `rest` starts with field 3 (the state).
    let mut fields = rest.split_ascii_whitespace().skip(48 - 3);
    let start: u64 = fields.next()?.parse().ok()?;
    let end: u64 = fields.next()?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// The argument memory as the kernel lays it out: each argument followed
/// by a NUL.
fn joined(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(args.iter().map(|a| a.len() + 1).sum());
    for a in args {
        out.extend_from_slice(a);
        out.push(0);
    }
    out
}

/// Where each span lies in [`joined`]`(args)`.
fn offsets(args: &[&[u8]], spans: &[(usize, Range<usize>)]) -> Vec<Range<usize>> {
    let mut starts = Vec::with_capacity(args.len());
    let mut at = 0;
    for a in args {
        starts.push(at);
        at += a.len() + 1;
    }
    spans
        .iter()
        .filter_map(|(i, r)| starts.get(*i).map(|s| s + r.start..s + r.end))
        .collect()
}

/// Which bytes of `args` (argument index, byte range) are secret: the
/// value after each of `flags` (`--flag VALUE`), the part after `=` in
/// `--flag=VALUE`, and any other argument equal to one of `values`. After
/// `--` every argument is positional. `args[0]` (the program) is skipped.
pub fn secret_spans(
    args: &[&[u8]],
    flags: &[&str],
    values: &[&[u8]],
) -> Vec<(usize, Range<usize>)> {
    let mut spans = Vec::new();
    let mut options_end = false;
    let mut i = 1;
    while i < args.len() {
        let arg = args[i];
        i += 1;
        if !options_end && arg == b"--" {
            options_end = true;
            continue;
        }
        if !options_end {
            if flags.iter().any(|f| arg == f.as_bytes()) {
                if let Some(value) = args.get(i) {
                    if !value.is_empty() {
                        spans.push((i, 0..value.len()));
                    }
                    i += 1;
                }
                continue;
            }
            let with_value = flags.iter().find_map(|f| {
                let f = f.as_bytes();
                (arg.len() > f.len() + 1 && arg.starts_with(f) && arg[f.len()] == b'=')
                    .then_some(f.len() + 1)
            });
            if let Some(from) = with_value {
                spans.push((i - 1, from..arg.len()));
                continue;
            }
        }
        if values.iter().any(|v| !v.is_empty() && arg == *v) {
            spans.push((i - 1, 0..arg.len()));
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_FLAGS: [&str; 3] = ["--code", "--relay-password", "--password"];

    fn spans(args: &[&str], values: &[&str]) -> Vec<(usize, Range<usize>)> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        secret_spans(&args, &SECRET_FLAGS, &values)
    }

    /// A stat line whose fields 48 and 49 are `start` and `end`.
    fn stat_line(comm: &str, start: u64, end: u64) -> Vec<u8> {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".into();
        fields[48 - 3] = start.to_string();
        fields[49 - 3] = end.to_string();
        format!("4242 ({comm}) {}\n", fields.join(" ")).into_bytes()
    }

    #[test]
    fn argument_bounds_are_counted_after_the_last_parenthesis() {
        assert_eq!(
            arg_bounds(&stat_line("tallow", 1000, 1050)),
            Some((1000, 1050))
        );
        // A command name made to shift the fields.
        assert_eq!(
            arg_bounds(&stat_line("a) (b", 140_000, 140_100)),
            Some((140_000, 140_100))
        );
        assert_eq!(arg_bounds(&stat_line("x) 1 2 3 (y", 7, 9)), Some((7, 9)));
        // Hidden (zero) or missing bounds are no bounds.
        assert_eq!(arg_bounds(&stat_line("tallow", 0, 0)), None);
        assert_eq!(arg_bounds(b"4242 (tallow) S 1 2 3"), None);
        assert_eq!(arg_bounds(b"no parenthesis at all"), None);
    }

    #[test]
    fn the_positional_code_is_found() {
        let args = [
            "tallow",
            "receive",
            "--out",
            "dl",
            "4821-alpha-bravo-charlie",
        ];
        assert_eq!(spans(&args, &["4821-alpha-bravo-charlie"]), [(4, 0..24)]);
    }

    #[test]
    fn flag_values_are_found_in_both_forms() {
        let args = [
            "tallow",
            "send",
            "--code",
            "7-a-b-c",
            "--relay-password=hunter2",
            "--relay",
            "r:9009",
            "f",
        ];
        assert_eq!(spans(&args, &[]), [(3, 0..7), (4, 17..24)]);
        let args = ["tallow", "relay", "--password", "pw", "--listen", "0:1"];
        assert_eq!(spans(&args, &[]), [(3, 0..2)]);
        let args = ["tallow", "send", "--code=7-a-b-c", "f"];
        assert_eq!(spans(&args, &[]), [(2, 7..14)]);
    }

    #[test]
    fn look_alikes_and_arguments_after_double_dash_are_left_alone() {
        // Not the flag (longer name), an empty value, a flag name given as
        // a file after `--`.
        let args = [
            "tallow", "send", "--codex", "--code=", "--", "--code", "file",
        ];
        assert_eq!(spans(&args, &[]), []);
        // A positional code after `--` still is.
        let args = ["tallow", "receive", "--", "7-a-b-c"];
        assert_eq!(spans(&args, &["7-a-b-c"]), [(3, 0..7)]);
        // A flag at the very end has no value to hide.
        assert_eq!(spans(&["tallow", "send", "--code"], &[]), []);
    }

    #[test]
    fn spans_map_to_the_kernel_layout() {
        let args: [&[u8]; 4] = [b"tallow", b"receive", b"--code=abc", b"7-a-b-c"];
        let layout = joined(&args);
        assert_eq!(layout, b"tallow\0receive\0--code=abc\x007-a-b-c\0");
        let spans = secret_spans(&args, &SECRET_FLAGS, &[b"7-a-b-c"]);
        let mut scrubbed = layout.clone();
        for r in offsets(&args, &spans) {
            scrubbed[r].fill(b'x');
        }
        assert_eq!(scrubbed, b"tallow\0receive\0--code=xxx\0xxxxxxx\0");
    }
}
