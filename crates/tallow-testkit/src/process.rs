//! The process harness for the real-process tests: start a relay, a
//! sender and a receiver as separate `tallow` processes on 127.0.0.1, a
//! hostile hop between them, make test files, compare results, poll a
//! process's memory. Every wait has a deadline so a broken build fails
//! instead of hanging.
//!
//! The binary is the `tallow` Cargo built next to the running test (see
//! [`binary`]), so any crate's tests can drive it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tallow_protocol::rendezvous::{RelayStatus, STATUS_HEADER_LEN};
use tallow_protocol::wire::Decode;

/// `tallow`'s exit status for a file-system failure (docs/exit-codes.md).
pub const EXIT_IO: i32 = 6;
/// `tallow`'s exit status when some files could not be sent and the rest
/// arrived.
pub const EXIT_PARTIAL: i32 = 8;

/// Longest any single process in a test may run.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(120);

/// The `tallow` binary Cargo built for this test run: `$TALLOW_BIN` if set,
/// else the one in the target folder of the running test binary
/// (`target/<profile>/deps/<test>` next to `target/<profile>/tallow`).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TALLOW_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile.join("tallow");
    assert!(
        path.is_file(),
        "no tallow binary at {}: run the tests with cargo, or set TALLOW_BIN",
        path.display()
    );
    path
}

/// `tallow` with a clean environment (no relay from the developer's shell).
pub fn tallow() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_remove("TALLOW_RELAY");
    cmd.env_remove("TALLOW_DISCOVERY_PORT");
    cmd.env_remove("TALLOW_CODE");
    cmd.env_remove("TALLOW_OUT");
    cmd.env_remove("TALLOW_COMPRESS");
    // Relays here are on 127.0.0.1: never through the developer's proxy.
    for proxy in [
        "TALLOW_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(proxy);
    }
    // Never read the developer's own `tallow config`.
    cmd.env("XDG_CONFIG_HOME", "/nonexistent/tallow-test-config");
    // The receiving user's checkpoint key: one per test binary, as one user.
    cmd.env("XDG_DATA_HOME", test_data_home());
    cmd
}

/// This test binary's data folder (the receiving user's checkpoint key).
pub fn test_data_home() -> PathBuf {
    std::env::temp_dir().join(format!("tallow-test-data-{}", std::process::id()))
}

/// A relay process; killed on drop.
pub struct Relay {
    child: Child,
    pub addr: String,
}

impl Relay {
    pub fn start(extra: &[&str]) -> Relay {
        let relay = Relay::start_listening("127.0.0.1:0", extra);
        assert!(
            relay.addr.starts_with("127.0.0.1:"),
            "relay at {}",
            relay.addr
        );
        relay
    }

    /// A relay listening on `listen` (`[::1]:0`, `[::]:0`, …); `addr` is
    /// the address it printed.
    pub fn start_listening(listen: &str, extra: &[&str]) -> Relay {
        let mut child = tallow()
            .args(["relay", "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn relay");
        let stdout = child.stdout.take().expect("relay stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining, so the relay never writes into a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("relay printed its address");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("address on the line")
            .to_owned();
        assert!(
            line.contains("listening on") && addr.contains(':'),
            "relay said {line:?}"
        );
        Relay { child, addr }
    }
}

impl Relay {
    /// The relay's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        signal(self.child.id(), "-TERM");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    /// A relay serving its metrics too; returns it and the metrics address.
    pub fn with_metrics() -> (Relay, String) {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = free.local_addr().unwrap().to_string();
        drop(free);
        (Relay::start(&["--metrics", &at]), at)
    }
}

/// GET a path from a relay's metrics endpoint.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// One counter from a relay's metrics endpoint at `addr`.
pub fn metric(addr: &str, name: &str) -> u64 {
    let text = http_get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// `Command::output` with a deadline: past [`PROCESS_DEADLINE`] the process
/// is killed and the test fails, instead of hanging. (Stdin is closed and
/// stdout and stderr are captured, as `output` does.)
pub trait OutputWithin {
    fn output_within(&mut self) -> std::io::Result<Output>;
}

impl OutputWithin for Command {
    fn output_within(&mut self) -> std::io::Result<Output> {
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        output_of(child)
    }
}

/// `Child::wait_with_output` with the same deadline.
pub fn output_of(mut child: Child) -> std::io::Result<Output> {
    fn collect(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let (out, err) = (collect(child.stdout.take()), collect(child.stderr.take()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > PROCESS_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {PROCESS_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// A running `tallow` process whose stderr is collected in the background.
pub struct Running {
    pub child: Child,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tallow");
        let mut stderr = child.stderr.take().expect("stderr");
        let reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Running {
            child,
            stderr: Some(reader),
        }
    }

    /// Wait for exit (killing it and failing the test past `deadline`).
    /// Returns the status, stderr and how long the wait took.
    pub fn finish_within(mut self, deadline: Duration) -> (ExitStatus, String, Duration) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = self.stderr.take().map(|h| h.join().unwrap_or_default());
                panic!("process did not exit within {deadline:?}; stderr: {err:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status, err, start.elapsed())
    }

    pub fn finish(self) -> (ExitStatus, String) {
        let (status, err, _) = self.finish_within(PROCESS_DEADLINE);
        (status, err)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running process whose stderr lines can be waited for while it runs;
/// killed on drop.
pub struct Watched {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    pub fn spawn(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tallow");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a stderr line containing `needle` (the process has then
    /// done everything it does before printing it), and return it; fail the
    /// test if it says nothing of the kind within 30 s.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let left = Duration::from_secs(30).saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(e) => panic!("no {needle:?} on stderr ({e}); saw {:?}", self.seen),
            }
        }
    }

    /// Wait for a sender to show its code, and return it.
    pub fn wait_for_code(&mut self) -> String {
        let line = self.wait_for("Code: ");
        line.split_once("Code: ")
            .map(|(_, code)| code.trim().to_owned())
            .unwrap_or_default()
    }

    /// Wait for exit (failing past [`PROCESS_DEADLINE`]); the status and
    /// all of stderr.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() <= PROCESS_DEADLINE,
                "the process did not exit; stderr: {:?}",
                self.seen
            );
            thread::sleep(Duration::from_millis(20));
        };
        // The reader ends at end of file, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tallow send --relay ADDR --no-lan --code CODE PATHS… EXTRA…` (tests
/// run in parallel: LAN discovery stays off unless a test turns it on with
/// its own discovery port).
pub fn sender(relay: &str, code: &str, paths: &[PathBuf], extra: &[&str]) -> Running {
    let mut cmd = tallow();
    cmd.args(["send", "--relay", relay, "--no-lan", "--code", code])
        .args(extra)
        .args(paths)
        .stdin(Stdio::null());
    Running::spawn(cmd)
}

/// One status from a relay, read off a raw client connection (within 10 s).
pub fn read_relay_status(stream: &mut std::net::TcpStream) -> RelayStatus {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut status = vec![0u8; STATUS_HEADER_LEN];
    stream.read_exact(&mut status).expect("status header");
    let len = RelayStatus::declared_len([status[0], status[1], status[2]]).expect("valid status");
    status.resize(STATUS_HEADER_LEN + len, 0);
    stream
        .read_exact(&mut status[STATUS_HEADER_LEN..])
        .expect("status text");
    RelayStatus::decode_all(&status).expect("valid status")
}

/// The next status on a raw relay client is "paired", with the address the
/// client connected from (as the relay tells it, for a direct path).
pub fn assert_paired(stream: &mut std::net::TcpStream) {
    let seen = stream.local_addr().ok();
    assert_eq!(read_relay_status(stream), RelayStatus::Paired(seen));
}

/// A raw client of the relay at `relay` (IPv4), from source address `from`
/// (any 127.x.y.z is this machine on Linux: several "hosts" for limits per
/// address), having sent `first` bytes.
pub fn raw_client_from(from: [u8; 4], relay: &str, first: &[u8]) -> std::net::TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::from((from, 0)).into())
        .expect("bind a 127.x source address");
    let target: std::net::SocketAddr = relay.parse().expect("relay IP:PORT");
    socket
        .connect(&target.into())
        .expect("connect to the relay");
    let mut stream: std::net::TcpStream = socket.into();
    stream.write_all(first).expect("send to the relay");
    stream
}

/// `tallow send --relay ADDR --no-lan EXTRA… PATHS…` with no code of its
/// own, once it shows the code the relay's number went into; returns it
/// and the code.
pub fn allocating_sender(relay: &str, paths: &[PathBuf], extra: &[&str]) -> (Watched, String) {
    let mut cmd = tallow();
    cmd.args(["send", "--relay", relay, "--no-lan"])
        .args(extra)
        .args(paths);
    let mut s = Watched::spawn(cmd);
    let code = s.wait_for_code();
    (s, code)
}

/// `tallow receive --relay ADDR --no-lan --out OUT EXTRA… CODE`
pub fn receiver(relay: &str, code: &str, out: &Path, extra: &[&str]) -> Running {
    let mut cmd = tallow();
    cmd.args(["receive", "--relay", relay, "--no-lan", "--out"])
        .arg(out)
        .args(extra)
        .arg(code)
        .stdin(Stdio::null());
    Running::spawn(cmd)
}

/// The shell command line of `tallow receive --no-lan --relay RELAY --out
/// OUT EXTRA CODE`, for running under script(1) or a shell.
pub fn receive_line(relay: &str, code: &str, out: &Path, extra: &str) -> String {
    format!(
        "{} receive --no-lan --relay {relay} --out '{}' {extra} {code}",
        binary().display(),
        out.display()
    )
}

/// The shell command `line` started under script(1) (a terminal of its
/// own), with the environment [`tallow`] sets up, its keyboard and screen
/// piped.
fn under_script(line: &str) -> Child {
    assert!(
        Command::new("script").arg("--version").output().is_ok(),
        "this test needs script(1) from util-linux (Debian: bsdutils)"
    );
    let mut script = Command::new("script");
    for (key, value) in tallow().get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    script
        .args(["-q", "-e", "-c", line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn script")
}

/// Run the shell command `line` under script(1), so it has a terminal,
/// typing `input` after `delay`; returns its exit status and everything it
/// showed on the terminal.
pub fn on_terminal(line: &str, input: &[u8], delay: Duration) -> (ExitStatus, String) {
    let mut tty = under_script(line);
    let mut typing = tty.stdin.take().expect("script's stdin");
    thread::sleep(delay);
    let _ = typing.write_all(input);
    drop(typing);
    let shown = output_of(tty).expect("script ran");
    (
        shown.status,
        String::from_utf8_lossy(&shown.stdout).into_owned(),
    )
}

/// Run the shell command `line` under script(1), typing `input` once the
/// terminal shows `shown` (within a minute); returns its exit status and
/// everything it showed.
pub fn on_terminal_when(line: &str, shown: &str, input: &[u8]) -> (ExitStatus, String) {
    on_terminal_answering(line, &[(shown, input)])
}

/// What the terminal shows, and what a person types once it does.
pub type Answer<'a> = (&'a str, &'a [u8]);

/// Run the shell command `line` under script(1) and answer its questions
/// as a person would: for each `(shown, input)` in turn, type `input` once
/// the terminal shows `shown` after the previous answer (within a minute
/// each). Returns its exit status and everything it showed.
pub fn on_terminal_answering(line: &str, answers: &[Answer<'_>]) -> (ExitStatus, String) {
    use std::sync::{Arc, Mutex};
    let mut tty = under_script(line);
    let mut typing = tty.stdin.take().expect("script's stdin");
    let mut screen = tty.stdout.take().expect("script's stdout");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = screen.read(&mut buf) {
                seen.lock().expect("screen").extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&seen.lock().expect("screen")).into_owned();
    let mut from = 0;
    for (shown, input) in answers {
        wait_until(Duration::from_secs(60), shown, || {
            let all = text();
            match all.get(from..).and_then(|rest| rest.find(shown)) {
                Some(at) => {
                    from += at + shown.len();
                    true
                }
                None => false,
            }
        });
        let _ = typing.write_all(input);
        let _ = typing.flush();
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = tty.try_wait().expect("script") {
            break status;
        }
        if started.elapsed() > PROCESS_DEADLINE {
            let _ = tty.kill();
            panic!("{line} still runs after {PROCESS_DEADLINE:?}: {}", text());
        }
        thread::sleep(Duration::from_millis(20));
    };
    drop(typing);
    let _ = reader.join();
    (status, text())
}

/// Run a sender and a receiver to completion; returns both results.
pub fn transfer(
    relay: &str,
    code: &str,
    paths: &[PathBuf],
    out: &Path,
    receiver_extra: &[&str],
) -> ((ExitStatus, String), (ExitStatus, String)) {
    let s = sender(relay, code, paths, &[]);
    let r = receiver(relay, code, out, receiver_extra);
    let r = r.finish();
    let s = s.finish();
    (s, r)
}

/// A file of `size` bytes that is cheap to make however large: all zeros
/// but one byte of data in each MiB, so every chunk carries data (a file
/// of holes only would go as holes, in no time).
pub fn mostly_empty_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let path = dir.join(name);
    let f = fs::File::create(&path).expect("create");
    f.set_len(size).expect("size");
    for at in (0..size).step_by(1 << 20) {
        f.write_at(&[1], at).expect("write");
    }
    path
}

/// A file of `size` pseudo-random (incompressible) bytes.
pub fn random_file(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(fs::File::create(&path).expect("create"));
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut written = 0u64;
    let mut block = vec![0u8; 64 * 1024];
    while written < size {
        for word in block.chunks_mut(8) {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        let n = (size - written).min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("write");
        written += n as u64;
    }
    f.flush().expect("flush");
    path
}

/// Assert `a` and `b` have the same bytes (without printing megabytes).
pub fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (fs::read(a).expect("read a"), fs::read(b).expect("read b"));
    assert_eq!(
        x.len(),
        y.len(),
        "{} vs {}: sizes differ",
        a.display(),
        b.display()
    );
    assert!(
        x == y,
        "{} vs {}: contents differ",
        a.display(),
        b.display()
    );
}

/// Names in a folder, sorted.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The checkpoints (of any transfer) in the output folder `out`.
pub fn checkpoints(out: &Path) -> Vec<PathBuf> {
    list_dir(out)
        .into_iter()
        .filter(|n| n.starts_with(".tallow-") && n.ends_with(".checkpoint"))
        .map(|n| out.join(n))
        .collect()
}

/// Poll until `cond` holds, failing the test after `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Send a signal with the shell's `kill` builtin (no procps needed).
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill {sig} {pid}")])
        .status()
        .expect("run sh");
    assert!(status.success(), "kill {sig} {pid}");
}

/// What a [`Hop`] does to the bytes it forwards.
#[derive(Clone, Default)]
pub struct HopBehaviour {
    /// Added latency, each way.
    pub delay: Duration,
    /// Flip the lowest bit of the byte at this offset of the first
    /// connection's client-to-server stream.
    pub flip_at: Option<u64>,
    /// Further damage to the first connection's client-to-server stream.
    pub tamper: Option<Tamper>,
}

/// Damage a hostile relay or network can do to a byte stream; offsets
/// count bytes of the first connection's client-to-server direction.
#[derive(Clone, Copy, Debug)]
pub enum Tamper {
    /// Set the byte at `at` to `value`.
    Set { at: u64, value: u8 },
    /// Insert one extra byte before `at`.
    Insert { at: u64 },
    /// Forward up to `at`, then close both sides (truncation mid-stream).
    Cut { at: u64 },
    /// Forward up to `at`, then reset both connections.
    Reset { at: u64 },
    /// Once `to` is reached, send bytes `from..to` again (replay).
    Replay { from: u64, to: u64 },
    /// Hold `at..at+len` back and send it after the next `len` bytes.
    Reorder { at: u64, len: u64 },
}

/// Applies a [`Tamper`] to a stream, a chunk at a time.
struct Tamperer {
    tamper: Tamper,
    offset: u64,
    kept: Vec<u8>,
    held: Vec<u8>,
}

impl Tamperer {
    /// The bytes to forward for `input`, and `Some(reset)` if the
    /// connection must end after them.
    fn apply(&mut self, input: &[u8]) -> (Vec<u8>, Option<bool>) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &byte in input {
            let at = self.offset;
            self.offset += 1;
            match self.tamper {
                Tamper::Set { at: t, value } if t == at => out.push(value),
                Tamper::Insert { at: t } if t == at => {
                    out.push(0x42);
                    out.push(byte);
                }
                Tamper::Cut { at: t } if at >= t => return (out, Some(false)),
                Tamper::Reset { at: t } if at >= t => return (out, Some(true)),
                Tamper::Replay { from, to } => {
                    out.push(byte);
                    if (from..to).contains(&at) {
                        self.kept.push(byte);
                    }
                    if at + 1 == to {
                        out.extend_from_slice(&self.kept);
                    }
                }
                Tamper::Reorder { at: t, len } if (t..t + len).contains(&at) => {
                    self.held.push(byte)
                }
                Tamper::Reorder { at: t, len } => {
                    out.push(byte);
                    if at + 1 == t + 2 * len {
                        out.append(&mut self.held);
                    }
                }
                _ => out.push(byte),
            }
        }
        (out, None)
    }
}

/// One forwarded read: when, which way (`true` = client to server), how many bytes.
pub type HopEvent = (Instant, bool, usize);

/// A TCP hop on 127.0.0.1 that forwards to `target`, recording what passes
/// and optionally delaying it or flipping a bit: the hostile or slow network
/// between a client and the relay.
pub struct Hop {
    pub addr: String,
    /// Every byte forwarded, both ways, in arrival order.
    pub bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    pub events: std::sync::Arc<std::sync::Mutex<Vec<HopEvent>>>,
}

impl Hop {
    /// Bytes forwarded from the client to the server (a sender's upload).
    pub fn upstream_bytes(&self) -> u64 {
        self.events
            .lock()
            .map(|events| events.iter().filter(|e| e.1).map(|e| e.2 as u64).sum())
            .unwrap_or(0)
    }

    pub fn start(target: &str, behaviour: HopBehaviour) -> Hop {
        use std::net::{TcpListener, TcpStream};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hop");
        let addr = listener.local_addr().expect("hop addr").to_string();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (b, e, target) = (bytes.clone(), events.clone(), target.to_owned());
        thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let directions = [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                        true,
                    ),
                    (server, client, false),
                ];
                for (from, to, upstream) in directions {
                    let first_up = upstream && n == 0;
                    let flip = if first_up { behaviour.flip_at } else { None };
                    let tamper = if first_up { behaviour.tamper } else { None };
                    let (b, e, delay) = (b.clone(), e.clone(), behaviour.delay);
                    thread::spawn(move || pump(from, to, upstream, delay, flip, tamper, b, e));
                }
            }
        });
        Hop {
            addr,
            bytes,
            events,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    upstream: bool,
    delay: Duration,
    flip_at: Option<u64>,
    tamper: Option<Tamper>,
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    events: std::sync::Arc<std::sync::Mutex<Vec<HopEvent>>>,
) {
    let mut tamperer = tamper.map(|tamper| Tamperer {
        tamper,
        offset: 0,
        kept: Vec::new(),
        held: Vec::new(),
    });
    let ends = (
        from.try_clone().expect("clone"),
        to.try_clone().expect("clone"),
    );
    // A reader thread timestamps data; this thread releases it `delay`
    // later, so latency is added without limiting bandwidth.
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk = buf[..n].to_vec();
            if let Some(at) = flip_at {
                if (offset..offset + n as u64).contains(&at) {
                    chunk[(at - offset) as usize] ^= 1;
                }
            }
            offset += n as u64;
            let mut end = None;
            if let Some(t) = tamperer.as_mut() {
                let (out, stop) = t.apply(&chunk);
                chunk = out;
                end = stop;
            }
            let now = Instant::now();
            events.lock().expect("events").push((now, upstream, n));
            bytes.lock().expect("bytes").extend_from_slice(&chunk);
            if tx.send((now + delay, chunk)).is_err() {
                break;
            }
            if let Some(reset) = end {
                // Let the last bytes go out, then end both connections.
                thread::sleep(Duration::from_millis(50) + delay);
                for s in [&ends.0, &ends.1] {
                    if reset {
                        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                    }
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                break;
            }
        }
    });
    for (due, chunk) in rx {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A temporary folder in memory (`/dev/shm`) when the machine has one with
/// room for `files` more files and `bytes` more bytes, so tests with many
/// files measure Tallow rather than the disk; otherwise the usual one.
pub fn memory_tempdir(files: u64, bytes: u64) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let room = rustix::fs::statvfs(shm)
        .is_ok_and(|fs| fs.f_favail >= files && fs.f_bavail.saturating_mul(fs.f_frsize) >= bytes);
    if room {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary folder: {e}"))
}

/// Peak resident memory (VmHWM) of a process, in bytes, polled until it
/// exits; returns the last value seen.
pub fn peak_rss_until_exit(pid: u32, deadline: Duration) -> u64 {
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < deadline {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            break;
        };
        if status.contains("State:\tZ") {
            break;
        }
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb * 1024);
        }
        thread::sleep(Duration::from_millis(10));
    }
    peak
}

/// Wait for a sender and a receiver, watching each one's peak resident
/// memory until it exits (for at most `deadline`); both must succeed.
/// Returns the peaks of (sender, receiver) and the receiver's stderr.
pub fn finish_watching_memory(s: Running, r: Running, deadline: Duration) -> (u64, u64, String) {
    let (spid, rpid) = (s.pid(), r.pid());
    let watch_s = thread::spawn(move || peak_rss_until_exit(spid, deadline));
    let watch_r = thread::spawn(move || peak_rss_until_exit(rpid, deadline));
    let (s_peak, r_peak) = (
        watch_s.join().expect("watching the sender"),
        watch_r.join().expect("watching the receiver"),
    );
    let (r_status, r_err) = r.finish();
    let (s_status, s_err) = s.finish();
    assert!(
        s_status.success() && r_status.success(),
        "sender: {s_err}\nreceiver: {r_err}"
    );
    (s_peak, r_peak, r_err)
}

/// Assert two trees have the same folders, files, bytes, permission bits
/// and modification times.
pub fn assert_same_tree(src: &Path, dst: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        |p: &Path| fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (a, b) = (meta(src), meta(dst));
    assert_eq!(a.is_dir(), b.is_dir(), "{}: kind differs", dst.display());
    assert_eq!(
        a.permissions().mode() & 0o777,
        b.permissions().mode() & 0o777,
        "{}: mode differs",
        dst.display()
    );
    if a.is_dir() {
        let (x, y) = (list_dir(src), list_dir(dst));
        assert_eq!(x, y, "{}: entries differ", dst.display());
        for name in x {
            assert_same_tree(&src.join(&name), &dst.join(&name));
        }
    } else {
        assert_same_file(src, dst);
    }
    assert_eq!(
        a.modified().unwrap(),
        b.modified().unwrap(),
        "{}: mtime differs",
        dst.display()
    );
}

/// Start `cmd` (stdin closed, stdout and stderr captured) and collect its
/// output on a thread: join the handle for it (within
/// [`PROCESS_DEADLINE`]). For two sides run at once whose `--json`
/// (stdout) matters.
pub fn spawn_capturing(mut cmd: Command) -> thread::JoinHandle<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tallow");
    thread::spawn(move || output_of(child).expect("wait for tallow"))
}

/// The `--json` line of the first event named `name` in `stdout`.
pub fn json_event<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    let start = format!("{{\"event\":\"{name}\"");
    stdout.lines().find(|l| l.starts_with(&start))
}

/// A process's captured output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Both sides of a transfer exited 0 (else the test fails with their
/// stderr).
pub fn assert_both_succeeded(sender: &Output, receiver: &Output) {
    assert!(
        sender.status.success() && receiver.status.success(),
        "sender: {}\nreceiver: {}",
        text(&sender.stderr),
        text(&receiver.stderr)
    );
}
