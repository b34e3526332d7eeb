//! The progress display on stderr (indicatif): a bar with percent, bytes
//! done of total, current speed, average speed and time left, and under it
//! the file in progress. Drawn only when stderr is a terminal (and not with
//! `--quiet` or `--json`); at most five times a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use tallow_protocol::manifest::Manifest;
use tallow_transfer::Progress;

use crate::events::{self, Event};

/// `--json` progress events come at most this often.
const JSON_PROGRESS_EVERY: Duration = Duration::from_millis(250);

const TEMPLATE: &str =
    "{prefix} {percent:>3}% [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} (avg {msg}) ETA {eta}";
/// On a terminal narrower than `NARROW` columns the line leaves out the bar
/// and the average, so that it never wraps (a wrapped line is redrawn one
/// row lower each time).
const NARROW_TEMPLATE: &str =
    "{prefix} {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
const NARROW: u16 = 80;

/// Tracks bytes and time, and draws the bar and the current file.
pub struct ProgressLine {
    bar: ProgressBar,
    file_line: ProgressBar,
    /// What is transferred, to name the file at the current byte count.
    manifest: Arc<Manifest>,
    /// That file: its index, and where it starts and ends in the stream.
    current: (usize, u64, u64),
    started: Instant,
    done: u64,
    /// Bytes that were already there; not counted in the speed.
    resumed: u64,
    last_event: Option<Instant>,
    /// The 100 % event was printed.
    reported_total: bool,
    /// Files and bytes the receiver kept as it had them (not sent).
    kept: (u64, u64),
    /// The receiver said yes.
    accepted: bool,
    /// The route the data takes.
    route: tallow_net::Via,
}

impl ProgressLine {
    /// `manifest`: what is being transferred, to name the current file;
    /// `route`: the way it goes, shown at the start of the line (`direct`,
    /// `lan`, `relay`) and in the summary.
    pub fn new(quiet: bool, manifest: &Arc<Manifest>, route: &tallow_net::Via) -> Self {
        let target = if quiet || events::enabled() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr_with_hz(5)
        };
        let lines = MultiProgress::with_draw_target(target);
        let bar = lines.add(ProgressBar::no_length());
        let template = match dialoguer::console::Term::stderr().size_checked() {
            Some((_, cols)) if cols > 0 && cols < NARROW => NARROW_TEMPLATE,
            _ => TEMPLATE,
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(route.kind());
        let file_line = lines.add(ProgressBar::no_length());
        if let Ok(style) = ProgressStyle::with_template("  {msg}") {
            file_line.set_style(style);
        }
        let first_end = manifest.files.first().map_or(0, |f| f.size);
        ProgressLine {
            bar,
            file_line,
            manifest: manifest.clone(),
            current: (0, 0, first_end),
            started: Instant::now(),
            done: 0,
            resumed: 0,
            last_event: None,
            reported_total: false,
            kept: (0, 0),
            accepted: false,
            route: route.clone(),
        }
    }

    /// Count `bytes` as already there before this run (not in the speed).
    pub fn resuming_from(mut self, bytes: u64) -> Self {
        self.resumed = bytes;
        self.bar.set_position(bytes);
        self.bar.reset_eta();
        self
    }

    pub fn update(&mut self, event: Progress) {
        match event {
            Progress::Bytes { done, total } => {
                self.done = done;
                self.bar.set_length(total);
                self.bar.set_position(done);
                self.bar
                    .set_message(format!("{}/s", human_bytes(self.rate())));
                if let Some(i) = self.file_at(done) {
                    let files = &self.manifest.files;
                    self.file_line.set_message(format!(
                        "{} ({} of {})",
                        display_name(files.at(i).path),
                        i + 1,
                        files.len()
                    ));
                }
                let now = Instant::now();
                let due = self
                    .last_event
                    .is_none_or(|t| now.duration_since(t) >= JSON_PROGRESS_EVERY);
                let finished = done == total && !self.reported_total;
                if due || finished {
                    self.reported_total |= done == total;
                    self.last_event = Some(now);
                    Event::new("progress")
                        .num("bytes", done)
                        .num("total", total)
                        .num("bytes_per_second", self.rate())
                        .emit();
                }
            }
            Progress::Resumed { bytes, total } => {
                Event::new("resumed")
                    .num("bytes", bytes)
                    .num("total", total)
                    .emit();
                self.resumed = bytes;
                self.bar.set_position(bytes);
                self.bar.reset_eta();
                self.bar.suspend(|| {
                    say!(
                        "Resuming: {} of {} already at the receiver.",
                        human_bytes(bytes),
                        human_bytes(total)
                    )
                });
            }
            Progress::Skipped { files, bytes } => {
                self.kept = (files, bytes);
                Event::new("skipped")
                    .num("files", files)
                    .num("bytes", bytes)
                    .emit();
                self.bar.suspend(|| {
                    say!(
                        "The receiver keeps {files} file{} it already has ({}): not sent.",
                        if files == 1 { "" } else { "s" },
                        human_bytes(bytes)
                    )
                });
            }
            Progress::Accepted => {
                Event::new("accepted").emit();
                self.accepted = true;
                self.started = Instant::now();
                self.bar.reset_elapsed();
                self.bar.reset_eta();
            }
            Progress::Refetching { index, bytes } => {
                Event::new("refetching")
                    .num("index", index as u64)
                    .num("bytes", bytes)
                    .emit();
                let name = self.manifest.files.get(index).map_or("", |f| f.path);
                self.bar.suspend(|| {
                    say!(
                        "{} of {} from the earlier run no longer matched on the receiver's disk: it is sent again.",
                        human_bytes(bytes),
                        display_name(name)
                    )
                });
            }
            Progress::FileComplete { index } => {
                Event::new("file_done").num("index", index as u64).emit();
            }
        }
    }

    /// The first file not yet complete at byte count `done`: found from
    /// the last one (counts only grow, but for a resume's first count).
    fn file_at(&mut self, done: u64) -> Option<usize> {
        let files = &self.manifest.files;
        let (mut i, mut start, mut end) = self.current;
        if done < start {
            (i, start, end) = (0, 0, files.first().map_or(0, |f| f.size));
        }
        while end <= done && i + 1 < files.len() {
            i += 1;
            start = end;
            end += files.at(i).size;
        }
        self.current = (i, start, end);
        (end > done).then_some(i)
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

    /// Whether the receiver accepted (on the sender).
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    /// Files and bytes the receiver kept as it had them (not sent).
    pub fn kept(&self) -> (u64, u64) {
        self.kept
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// `direct`, `lan` or `relay`, for `--json`.
    pub fn route(&self) -> &'static str {
        self.route.kind()
    }

    /// `directly in 2.5 s (80.0 MiB/s)` for the summary line (the route,
    /// then the time); no speed for a transfer too short to measure or
    /// with nothing left to move.
    pub fn took(&self) -> String {
        format!("{} {}", self.route.in_words(), self.time_taken())
    }

    fn time_taken(&self) -> String {
        let secs = self.elapsed().as_secs_f64();
        if secs < 0.1 {
            return "in under 0.1 s".to_owned();
        }
        if self.done <= self.resumed {
            return format!("in {secs:.1} s");
        }
        if self.resumed > 0 {
            // The speed is that of what moved; say the rest did not.
            return format!(
                "in {secs:.1} s ({}/s; {} of it was there from before)",
                human_bytes(self.rate()),
                human_bytes(self.resumed)
            );
        }
        format!("in {secs:.1} s ({}/s)", human_bytes(self.rate()))
    }

    /// Remove the lines so the summary stands alone.
    pub fn finish(&self) {
        self.file_line.finish_and_clear();
        self.bar.finish_and_clear();
    }
}

pub use tallow_transfer::human_bytes;

/// Top-level names listed before "and N more", by sender and receiver alike.
pub const NAMES_SHOWN: usize = 10;

/// `1 file`, `3 files`.
pub fn plural(n: u64, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        _ => format!("{n} {thing}s"),
    }
}

/// `a, b, c, and 4 more`: the first [`NAMES_SHOWN`] names, escaped.
pub fn names_summary(names: &[&str]) -> String {
    some_names_summary(names, names.len() as u64)
}

/// [`names_summary`] of `total` things of which only `names` are known.
pub fn some_names_summary(names: &[&str], total: u64) -> String {
    let mut shown: Vec<String> = names
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| display_name(n))
        .collect();
    let more = total.saturating_sub(shown.len() as u64);
    if more > 0 {
        shown.push(format!("and {more} more"));
    }
    shown.join(", ")
}

/// `5 min ago`, `3 h ago`, `2 days ago`.
pub fn human_age(age: Duration) -> String {
    let minutes = age.as_secs() / 60;
    match minutes {
        0 => "less than a minute ago".to_owned(),
        1..=59 => format!("{minutes} min ago"),
        60..=2879 => format!("{} h ago", minutes / 60),
        _ => format!("{} days ago", minutes / 1440),
    }
}

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
    fn the_file_named_is_the_first_one_not_complete_at_the_count() {
        let sizes = [0, 10, 0, 5];
        let manifest = Arc::new(Manifest {
            chunk_size: 1 << 20,
            dirs: vec![],
            files: tallow_protocol::file_list::FileList::from_entries(
                sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &size)| tallow_protocol::manifest::FileEntry {
                        path: format!("f{i}"),
                        size,
                        mode: 0o644,
                        mtime: Default::default(),
                    }),
            )
            .unwrap(),
            left_out: Default::default(),
        });
        let mut line = ProgressLine::new(true, &manifest, &tallow_net::Via::Relay("r:1".into()));
        // Empty files are complete at once; counts grow, or start again
        // lower (a resume).
        for (done, file) in [
            (0, Some(1)),
            (9, Some(1)),
            (10, Some(3)),
            (15, None),
            (3, Some(1)),
        ] {
            assert_eq!(line.file_at(done), file, "at {done}");
        }
    }

    #[test]
    fn ages_and_name_lists_read_naturally() {
        assert_eq!(human_age(Duration::from_secs(20)), "less than a minute ago");
        assert_eq!(human_age(Duration::from_secs(5 * 60)), "5 min ago");
        assert_eq!(human_age(Duration::from_secs(3 * 3600)), "3 h ago");
        assert_eq!(human_age(Duration::from_secs(3 * 86_400)), "3 days ago");
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            names_summary(&names),
            "n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, and 2 more"
        );
        assert_eq!(names_summary(&["a\u{1b}b"]), "a\\u{1b}b");
        assert_eq!(some_names_summary(&["a", "b"], 5), "a, b, and 3 more");
        assert_eq!(plural(1, "file"), "1 file");
        assert_eq!(plural(0, "file"), "0 files");
        assert_eq!(some_names_summary(&[], 2), "and 2 more");
    }

    #[test]
    fn names_with_bidi_or_escapes_are_shown_escaped() {
        assert_eq!(display_name("plain.txt"), "plain.txt");
        assert_eq!(display_name("a\u{202e}txt.exe"), "a\\u{202e}txt.exe");
        assert_eq!(display_name("\u{1b}[2J"), "\\u{1b}[2J");
    }
}
