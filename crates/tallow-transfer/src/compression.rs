//! Which chunks the sender compresses, and how hard.
//!
//! Two questions, two parts, both fed observations and free of I/O:
//!
//! * [`CompressionPolicy`] (per file of several chunks; files of one chunk
//!   share one): is this chunk worth trying at all? After a chunk that did
//!   not compress it skips a doubling number of chunks (up to 64), so
//!   random data costs almost nothing.
//! * [`LevelChooser`]: which zstd level, or none. It watches the queue of
//!   frames waiting for the socket. Full most of the time: the link is the
//!   bottleneck and the sender's threads wait on it, so more CPU per byte
//!   may buy a better ratio: it tries one level up. Empty most of the
//!   time: the socket waits for them (the CPU is the bottleneck): it tries
//!   one level down, through zstd's fast negative
//!   levels, and in `auto` mode to not compressing at all. Each step is
//!   kept only if the rate it measures next is not worse, because what a
//!   level gains depends on the data: on the benchmark's repeated text,
//!   level -1 keeps 9× of level 1's 22× for 7 % more speed, and level 9
//!   compresses less than level 1 (docs/performance.md has the table).
//!
//! [`ChunkCompression`] asks both as each chunk is read; a chunk not to be
//! compressed skips the workers.
//!
//! zstd frames say nothing of their level, so the receiver decompresses
//! every level the same way, within the same cap.

use std::time::{Duration, Instant};

/// A compressed chunk is sent only if it saves at least 1/16 of the bytes.
const MIN_SAVING_DIVISOR: usize = 16;
/// In `auto` mode, after an incompressible chunk, skip trying for up to this
/// many chunks (doubling from 1), so random data costs almost nothing.
const MAX_COMPRESSION_BACKOFF: u64 = 64;

/// Whether to compress chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at a level that follows the link, off when the CPU is the
    /// bottleneck, backing off on data that does not compress.
    Auto,
    /// Try zstd on every chunk, at a level that follows the link (never
    /// off).
    Zstd,
    /// Send every chunk raw.
    None,
}

/// When to try compressing the next chunk of a file.
struct CompressionPolicy {
    mode: Compression,
    skip: u64,
    backoff: u64,
}

impl CompressionPolicy {
    fn new(mode: Compression) -> Self {
        CompressionPolicy {
            mode,
            skip: 0,
            backoff: 1,
        }
    }

    fn should_try(&mut self) -> bool {
        match self.mode {
            Compression::None => false,
            Compression::Zstd => true,
            Compression::Auto if self.skip > 0 => {
                self.skip -= 1;
                false
            }
            Compression::Auto => true,
        }
    }

    fn record(&mut self, helped: bool) {
        if helped {
            self.backoff = 1;
        } else {
            self.skip = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_COMPRESSION_BACKOFF);
        }
    }

    /// The last try did not help: the next one only probes whether the
    /// data compresses again.
    fn probing(&self) -> bool {
        self.backoff > 1
    }
}

/// The zstd level for the next chunk: a hill climb on the measured rate.
///
/// Each period (at least `PERIOD_CHUNKS` chunks and `PERIOD`) it measures
/// the plaintext bytes per second handed on towards the socket, and how
/// full the queue to the socket was. A full queue says the link is the
/// bottleneck (try one level up), an empty one that the CPU is (one level
/// down, then off). A step is a trial: kept if the next period's rate is
/// not worse, undone otherwise, and then no step is tried for a while
/// (doubling after each failed trial), so a level that is worse on this
/// data and link (zstd's negative levels lose most of the ratio on text;
/// level 7 is three times slower than 5) is visited rarely.
#[derive(Debug)]
struct LevelChooser {
    mode: Compression,
    /// An index into `LADDER`.
    rung: usize,
    period: Period,
    /// The step being tried: the rung it left and the rate there.
    trial: Option<(usize, f64)>,
    /// Periods to wait before the next trial, and how long the next wait
    /// after a failed trial is.
    hold: u32,
    next_hold: u32,
    /// Whether the next step down goes straight to raw chunks: not
    /// compressing is a different kind of step (no CPU at all), so it is
    /// tried in turn with one level down, and a valley of worse fast
    /// levels between a level and raw does not hide raw.
    raw_next: bool,
}

/// The levels the chooser moves between, cheapest first; `None` sends
/// chunks raw.
const LADDER: [Option<i32>; 7] = [None, Some(-3), Some(-1), Some(1), Some(3), Some(5), Some(7)];
/// Where a transfer starts: level 1, fast and most of the gain on text.
const START: usize = 3;
/// The level of chunks sent outside the stream (refetched), with no link
/// to measure.
pub(crate) const FIXED_LEVEL: i32 = 1;
/// A period is at least this many chunks…
const PERIOD_CHUNKS: u32 = 8;
/// …and this long.
const PERIOD: Duration = Duration::from_millis(250);
/// A trial is undone if the rate falls by more than this fraction.
const WORSE: f64 = 0.05;
/// Periods without trials after the first failed one; doubles up to
/// `MAX_HOLD`.
const FIRST_HOLD: u32 = 4;
const MAX_HOLD: u32 = 64;

/// What one period saw.
#[derive(Debug)]
struct Period {
    started: Option<Instant>,
    chunks: u32,
    bytes: u64,
    full: u32,
    empty: u32,
}

impl Period {
    fn new() -> Self {
        Period {
            started: None,
            chunks: 0,
            bytes: 0,
            full: 0,
            empty: 0,
        }
    }
}

impl LevelChooser {
    fn new(mode: Compression) -> Self {
        LevelChooser {
            mode,
            rung: if mode == Compression::None { 0 } else { START },
            period: Period::new(),
            trial: None,
            hold: 0,
            next_hold: FIRST_HOLD,
            raw_next: true,
        }
    }

    /// The level to compress at, or `None` for raw chunks.
    fn level(&self) -> Option<i32> {
        LADDER[self.rung]
    }

    /// The lowest rung this mode may use: `zstd` never turns off.
    fn floor(&self) -> usize {
        usize::from(self.mode == Compression::Zstd)
    }

    /// A chunk of `bytes` is ready at `now`, and `queued` of the queue's
    /// `capacity` frames wait for the socket.
    fn observe(&mut self, bytes: u64, queued: usize, capacity: usize, now: Instant) {
        if self.mode == Compression::None {
            return;
        }
        let p = &mut self.period;
        let started = *p.started.get_or_insert(now);
        p.chunks += 1;
        p.bytes += bytes;
        if queued * 4 >= capacity * 3 {
            p.full += 1;
        } else if queued * 4 <= capacity {
            p.empty += 1;
        }
        let elapsed = now.saturating_duration_since(started);
        if p.chunks < PERIOD_CHUNKS || elapsed < PERIOD {
            return;
        }
        let rate = p.bytes as f64 / elapsed.as_secs_f64();
        let most = p.chunks * 3 / 4;
        let (link_bound, cpu_bound) = (p.full >= most, p.empty >= most);
        // The next period starts with this chunk's successor.
        self.period = Period::new();
        self.period.started = Some(now);

        if let Some((from, before)) = self.trial.take() {
            if rate < before * (1.0 - WORSE) {
                self.rung = from;
                self.hold = self.next_hold;
                self.next_hold = (self.next_hold * 2).min(MAX_HOLD);
            } else {
                self.next_hold = FIRST_HOLD;
            }
            return;
        }
        if self.hold > 0 {
            self.hold -= 1;
            return;
        }
        let to = if link_bound {
            (self.rung + 1).min(LADDER.len() - 1)
        } else if cpu_bound {
            let raw = self.raw_next;
            self.raw_next = !raw;
            if raw {
                // The floor: raw, or in `zstd` mode its fastest level.
                self.floor()
            } else {
                self.rung.saturating_sub(1).max(self.floor())
            }
        } else {
            self.rung
        };
        if to != self.rung {
            self.trial = Some((self.rung, rate));
            self.rung = to;
        }
    }
}

/// Whether and how hard to compress each chunk, decided where the chunk is
/// read: from the link ([`LevelChooser`]) and from the data
/// ([`CompressionPolicy`]). A chunk not to be compressed goes straight to
/// the socket's queue, not through a worker (one thread hand-off less for
/// each of many small files).
pub(crate) struct ChunkCompression {
    mode: Compression,
    chooser: LevelChooser,
    policy: CompressionPolicy,
}

impl ChunkCompression {
    pub(crate) fn new(mode: Compression) -> Self {
        ChunkCompression {
            mode,
            chooser: LevelChooser::new(mode),
            policy: CompressionPolicy::new(mode),
        }
    }

    /// The level to compress the next chunk of `bytes` at, or `None`: send
    /// it raw. `fresh_file`: it begins a file of several chunks, whose
    /// compressibility is judged afresh. `queued` of the queue's `capacity`
    /// frames wait for the socket at `now`.
    pub(crate) fn decide(
        &mut self,
        fresh_file: bool,
        bytes: u64,
        queued: usize,
        capacity: usize,
        now: Instant,
    ) -> Option<i32> {
        if fresh_file {
            self.policy = CompressionPolicy::new(self.mode);
        }
        self.chooser.observe(bytes, queued, capacity, now);
        let level = self.chooser.level().filter(|_| self.policy.should_try())?;
        // A probe of data that did not compress lately needs no strong
        // level: level 7 on a megabyte of random bytes costs as much as
        // sending it several times over on a fast link.
        Some(if self.policy.probing() {
            level.min(FIXED_LEVEL)
        } else {
            level
        })
    }

    /// Whether compressing the chunk helped.
    pub(crate) fn record(&mut self, helped: bool) {
        self.policy.record(helped);
    }
}

/// Compress `data` into `out` if that saves enough; `false` means send the
/// chunk raw.
pub(crate) fn compress_into(
    compressor: &mut zstd::bulk::Compressor<'_>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let limit = data.len() - data.len() / MIN_SAVING_DIVISOR;
    if limit == 0 {
        return false;
    }
    out.clear();
    out.reserve(limit);
    // zstd writes into the spare capacity and fails rather than grow the
    // buffer, so a result that would not fit is "it did not help".
    match compressor.compress_to_buffer(data, out) {
        Ok(n) => n < limit,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_compression_backs_off_on_incompressible_data() {
        let mut p = CompressionPolicy::new(Compression::Auto);
        let mut tries = 0;
        for _ in 0..1000 {
            if p.should_try() {
                tries += 1;
                p.record(false);
            }
        }
        assert!(tries < 1000 / 16 + 10, "tried {tries} times");
        let mut p = CompressionPolicy::new(Compression::Auto);
        for _ in 0..100 {
            assert!(p.should_try());
            p.record(true);
        }
        let mut p = CompressionPolicy::new(Compression::None);
        assert!(!p.should_try());
    }

    /// A link and a CPU as the chooser sees them: `rate_at(level)` is the
    /// rate (MB/s) at a level and whether the link limits it (the queue is
    /// full) or the CPU (empty). Runs `seconds` of 1 MB chunks and returns
    /// the share of the second half spent at each level.
    fn simulate(
        c: &mut LevelChooser,
        seconds: f64,
        rate_at: impl Fn(Option<i32>) -> (f64, bool),
    ) -> Vec<(Option<i32>, f64)> {
        let start = Instant::now();
        let mut now = 0.0;
        let mut share: Vec<(Option<i32>, f64)> = Vec::new();
        while now < seconds {
            let level = c.level();
            let (mb_per_s, link_bound) = rate_at(level);
            let step = 1.0 / mb_per_s;
            now += step;
            if now > seconds / 2.0 {
                match share.iter_mut().find(|(l, _)| *l == level) {
                    Some((_, t)) => *t += step / (seconds / 2.0),
                    None => share.push((level, step / (seconds / 2.0))),
                }
            }
            let at = start + Duration::from_secs_f64(now);
            c.observe(1_000_000, if link_bound { 8 } else { 0 }, 8, at);
        }
        share
    }

    fn share_at(share: &[(Option<i32>, f64)], levels: &[Option<i32>]) -> f64 {
        share
            .iter()
            .filter(|(l, _)| levels.contains(l))
            .map(|(_, t)| t)
            .sum()
    }

    /// The benchmark's repeated text through a link of `link` MB/s with
    /// `cores` compressing (ratios and speeds of one core measured here).
    fn text_through(link: f64, cores: f64) -> impl Fn(Option<i32>) -> (f64, bool) {
        move |level| {
            let (ratio, cpu) = match level {
                None => (1.0, f64::INFINITY),
                Some(-3) => (2.85, 297.0),
                Some(-1) => (9.2, 282.0),
                Some(1) => (21.6, 264.0),
                Some(3) => (21.9, 249.0),
                Some(5) => (23.9, 218.0),
                Some(_) => (24.8, 95.0),
            };
            let (by_link, by_cpu) = (link * ratio, cpu * cores);
            (by_link.min(by_cpu), by_link <= by_cpu)
        }
    }

    #[test]
    fn on_a_slow_link_the_level_climbs_to_the_best_ratio_the_cpu_keeps_up_with() {
        let mut c = LevelChooser::new(Compression::Auto);
        // Two cores: up to level 5 the link limits; level 7 is too slow.
        let share = simulate(&mut c, 120.0, text_through(12.5, 2.0));
        assert!(share_at(&share, &[Some(5)]) > 0.8, "{share:?}");
    }

    #[test]
    fn on_a_fast_link_the_cpu_limits_and_compression_turns_off() {
        // 600 MB/s raw, and every level slower than that.
        let mut c = LevelChooser::new(Compression::Auto);
        let share = simulate(&mut c, 60.0, |level| match level {
            None => (600.0, true),
            other => text_through(600.0, 1.0)(other),
        });
        assert!(share_at(&share, &[None]) > 0.8, "{share:?}");
    }

    #[test]
    fn raw_is_found_behind_fast_levels_that_are_worse() {
        // Loopback: the wire costs CPU too, so -1 and -3 (more bytes for
        // little speed) are worse than level 1, and raw is twice as fast.
        let mut c = LevelChooser::new(Compression::Auto);
        let share = simulate(&mut c, 60.0, |level| match level {
            None => (500.0, true),
            Some(-3) => (180.0, false),
            Some(-1) => (200.0, false),
            Some(_) => (250.0, false),
        });
        assert!(share_at(&share, &[None]) > 0.8, "{share:?}");
    }

    #[test]
    fn a_step_down_that_loses_ratio_is_undone_and_rarely_retried() {
        // 1 Gbit/s and one core: every level is CPU-bound; raw carries
        // only 118 MB/s. The faster negative levels win here (297 MB/s at
        // -3 against 264 at 1); off is tried and undone.
        let mut c = LevelChooser::new(Compression::Auto);
        let share = simulate(&mut c, 120.0, text_through(118.0, 1.0));
        assert!(share_at(&share, &[Some(-3)]) > 0.8, "{share:?}");
        assert!(share_at(&share, &[None]) < 0.05, "{share:?}");
        // Two cores: -1 is worth it (564 MB/s against 528 at level 1) but
        // -3 is not (its ratio of 2.85 lets the link carry only 336): the
        // climb down stops after one step.
        let mut c = LevelChooser::new(Compression::Auto);
        let share = simulate(&mut c, 120.0, text_through(118.0, 2.0));
        assert!(share_at(&share, &[Some(-1)]) > 0.8, "{share:?}");
    }

    #[test]
    fn forced_zstd_never_turns_off_and_none_never_turns_on() {
        let fast = |level: Option<i32>| (if level.is_none() { 900.0 } else { 100.0 }, false);
        let mut c = LevelChooser::new(Compression::Zstd);
        let share = simulate(&mut c, 30.0, fast);
        assert_eq!(share_at(&share, &[None]), 0.0, "{share:?}");
        let mut c = LevelChooser::new(Compression::None);
        let share = simulate(&mut c, 30.0, |_| (10.0, true));
        assert!(share_at(&share, &[None]) > 0.99, "{share:?}");
    }

    #[test]
    fn compression_is_used_only_when_it_saves_enough() {
        let mut c = zstd::bulk::Compressor::new(FIXED_LEVEL).unwrap();
        let mut out = Vec::new();
        let text = b"all work and no play makes jack a dull boy ".repeat(1000);
        assert!(compress_into(&mut c, &text, &mut out));
        assert!(out.len() < text.len() / 10);
        assert_eq!(zstd::bulk::decompress(&out, text.len()).unwrap(), text);
        let mut state = 1u64;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        assert!(!compress_into(&mut c, &noise, &mut out));
        assert!(!compress_into(&mut c, b"", &mut out));
    }

    #[test]
    fn chunks_of_incompressible_data_mostly_skip_the_workers() {
        let mut c = ChunkCompression::new(Compression::Auto);
        let now = Instant::now();
        let mut tried = 0;
        for _ in 0..1000 {
            if c.decide(false, 4096, 4, 8, now).is_some() {
                tried += 1;
                c.record(false);
            }
        }
        assert!(tried < 1000 / 16 + 10, "tried {tried}");
        // A new large file is judged afresh.
        assert_eq!(c.decide(true, 1 << 20, 4, 8, now), Some(FIXED_LEVEL));
        // On a slow link the level climbs, but a probe after data that did
        // not compress stays cheap.
        let mut slow = ChunkCompression::new(Compression::Auto);
        let mut t = now;
        for _ in 0..400 {
            t += Duration::from_millis(100);
            if slow.decide(false, 1 << 20, 8, 8, t).is_some() {
                slow.record(true);
            }
        }
        assert_eq!(slow.decide(false, 1 << 20, 8, 8, t), Some(7));
        slow.record(false);
        let probe = (0..10).find_map(|_| slow.decide(false, 1 << 20, 8, 8, t));
        assert_eq!(probe, Some(FIXED_LEVEL));
        let mut none = ChunkCompression::new(Compression::None);
        assert_eq!(none.decide(true, 1 << 20, 8, 8, now), None);
    }

    #[test]
    fn every_level_on_the_ladder_round_trips() {
        let text = b"0123456789 some text that repeats, ".repeat(4000);
        let mut out = Vec::new();
        for level in LADDER.into_iter().flatten() {
            let mut c = zstd::bulk::Compressor::new(level).unwrap();
            assert!(compress_into(&mut c, &text, &mut out), "level {level}");
            assert_eq!(zstd::bulk::decompress(&out, text.len()).unwrap(), text);
        }
    }
}
