//! A one-line progress display (percent, bytes, speed) on stderr, only when
//! stderr is a terminal, redrawn at most five times a second.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tallow_protocol::Progress;

const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// Tracks bytes and time; draws when it is time to.
pub struct ProgressLine {
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
    done: u64,
    total: u64,
    /// Bytes that were already there; not counted in the speed.
    resumed: u64,
}

impl ProgressLine {
    pub fn new() -> Self {
        ProgressLine {
            enabled: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            done: 0,
            total: 0,
            resumed: 0,
        }
    }

    /// Count `bytes` as already there before this run (not in the speed).
    pub fn resuming_from(mut self, bytes: u64) -> Self {
        self.resumed = bytes;
        self
    }

    pub fn update(&mut self, event: Progress) {
        let (done, total) = match event {
            Progress::Bytes { done, total } => (done, total),
            Progress::Resumed { bytes, total } => {
                self.resumed = bytes;
                eprintln!(
                    "Resuming: {} of {} already at the receiver.",
                    human_bytes(bytes),
                    human_bytes(total)
                );
                return;
            }
            Progress::FileComplete { .. } => return,
        };
        self.done = done;
        self.total = total;
        let now = Instant::now();
        let due = self
            .last_draw
            .is_none_or(|t| now.duration_since(t) >= REDRAW_EVERY);
        if self.enabled && (due || done == total) {
            self.last_draw = Some(now);
            let percent = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            eprint!(
                "\r\x1b[K{percent:5.1}%  {} / {}  {}/s",
                human_bytes(done),
                human_bytes(total),
                human_bytes(self.rate())
            );
            let _ = std::io::stderr().flush();
        }
    }

    /// Bytes moved per second since the start.
    pub fn rate(&self) -> u64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            (self.done.saturating_sub(self.resumed) as f64 / secs) as u64
        } else {
            0
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// End the line so the next message starts on its own.
    pub fn finish(&self) {
        if self.enabled && self.last_draw.is_some() {
            eprintln!();
        }
    }
}

pub use tallow_protocol::human_bytes;

/// A name from a peer, safe to print: anything that is not a visible
/// character (controls, bidirectional overrides, zero-width marks) is shown
/// as an escape instead of being interpreted by the terminal.
pub fn display_name(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let invisible = c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
            let shown: Box<dyn Iterator<Item = char>> = if invisible {
                Box::new(c.escape_unicode())
            } else {
                Box::new(std::iter::once(c))
            };
            shown
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_bidi_or_escapes_are_shown_escaped() {
        assert_eq!(display_name("plain.txt"), "plain.txt");
        assert_eq!(display_name("a\u{202e}txt.exe"), "a\\u{202e}txt.exe");
        assert_eq!(display_name("\u{1b}[2J"), "\\u{1b}[2J");
    }
}
