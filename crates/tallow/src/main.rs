//! `tallow`: the command line. Parses arguments, asks the user, shows
//! progress and turns errors into one sentence and an exit status. The
//! protocol itself lives in the library crates.

/// `eprintln!` that never panics: stderr may be a closed pipe
/// (`tallow … 2>&1 | head -1`), and a message is not worth a crash.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that never panics (stdout may be a closed pipe).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod advice;
mod argv;
mod config;
mod events;
mod exit;
mod progress;
mod receive;
mod relay;
mod send;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use tallow_net::session::Route;
use tallow_protocol::limits::Deadlines;

#[derive(Parser)]
#[command(
    name = "tallow",
    version,
    about = "Send files between two machines, end-to-end encrypted with a short code phrase (post-quantum: ML-KEM-1024 + X25519, authenticated by SPAKE2).",
    after_help = "Examples:\n  # On one network, nothing to set up:\n  tallow send report.pdf\n  tallow receive 1234-alpha-bravo-charlie\n  # Across networks, through a relay both reach:\n  tallow relay --listen [::]:9009\n  tallow send --relay relay.example.org:9009 a.pdf"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Offer files: prints a code phrase, waits for the receiver, sends.
    #[command(
        after_help = "Examples:\n  tallow send photo.jpg notes.txt\n  tallow send --relay relay.example.org:9009 ~/holiday"
    )]
    Send(send::SendArgs),
    /// Receive files offered with a code phrase.
    #[command(
        after_help = "Examples:\n  tallow receive 1234-alpha-bravo-charlie\n  tallow receive --out ~/Downloads 1234-alpha-bravo-charlie"
    )]
    Receive(receive::ReceiveArgs),
    /// Run a relay that pairs senders and receivers (it never sees plaintext).
    #[command(after_help = "Example:\n  tallow relay --listen [::]:9009")]
    Relay(relay::RelayArgs),
    /// Show or set defaults (relay, output folder, compression).
    #[command(
        after_help = "Examples:\n  tallow config\n  tallow config set relay relay.example.org:9009\n  tallow config unset relay"
    )]
    Config(config::ConfigArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  mkdir -p ~/.local/share/bash-completion/completions\n  cd ~/.local/share/bash-completion/completions\n  tallow completions bash > tallow"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff), or write every page into a folder.
    #[command(
        after_help = "Examples:\n  tallow man receive > tallow-receive.1\n  man ./tallow-receive.1\n  tallow man --dir ~/.local/share/man/man1"
    )]
    Man {
        /// The command whose page to print (default: tallow's own page).
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
        /// Write the pages of tallow and of every command (tallow.1,
        /// tallow-send.1, …) into this folder instead.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        dir: Option<PathBuf>,
    },
}

/// Options shared by `send` and `receive`.
#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// Relay address, HOST:PORT, or a comma-separated list of relays (both
    /// sides then pick the same one for the code). Without one, the two
    /// sides find each other on the local network.
    #[arg(long, env = "TALLOW_RELAY", value_name = "HOST:PORT")]
    relay: Option<String>,
    /// Password of a relay that requires one. Given here it is hidden from
    /// the process list once tallow starts (Linux), not before;
    /// TALLOW_RELAY_PASSWORD keeps it out entirely.
    #[arg(
        long,
        env = "TALLOW_RELAY_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        value_parser = crate::relay_password
    )]
    relay_password: Option<String>,
    /// Reach the relay through this proxy: socks5://HOST:PORT or
    /// http://HOST:PORT (HTTP CONNECT), with USER:PASS@ if it needs them.
    /// Without it, ALL_PROXY is used (NO_PROXY exempts relays); the local
    /// network is always direct.
    #[arg(
        long,
        env = "TALLOW_PROXY",
        value_name = "URL",
        conflicts_with = "lan_only"
    )]
    proxy: Option<String>,
    /// Do not announce or look for the other side on the local network.
    #[arg(long, conflicts_with = "lan_only")]
    no_lan: bool,
    /// Use the local network only, never a relay.
    #[arg(long)]
    lan_only: bool,
    /// Keep every byte on the relay: no local-network discovery and no
    /// direct connection, so the other side never learns this machine's
    /// addresses (by default, after the handshake through a relay, both
    /// sides offer theirs and move to a direct connection if one works
    /// within 3 s). Reaching the relay through a proxy turns direct
    /// connections off too (the local network stays as set).
    #[arg(
        long,
        env = "TALLOW_RELAY_ONLY",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    relay_only: bool,
    /// UDP port for local-network announcements.
    #[arg(long, env = "TALLOW_DISCOVERY_PORT", value_name = "PORT", default_value_t = tallow_net::lan::DEFAULT_DISCOVERY_PORT)]
    discovery_port: u16,
    /// Show a short authentication string and ask to confirm it matches the
    /// other side's before any file data moves.
    #[arg(long)]
    verify: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Print one JSON event per line on stdout (code, connected, offer,
    /// progress, done, error) instead of the progress bar.
    #[arg(long)]
    json: bool,
    /// Give up when the other side sends or takes nothing for this long.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_timeout: u64,
    /// Give up when the other side has not joined after this long (a
    /// receiver searches the local network for at most 30 s of it).
    #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    wait_timeout: u64,
}

impl ClientArgs {
    fn route(&self) -> anyhow::Result<Route> {
        let relay = if self.lan_only {
            None
        } else {
            match &self.relay {
                Some(r) => Some(r.clone()),
                None => config::get("relay")?,
            }
        };
        if let Some(r) = &relay {
            if !r.split(',').all(config::is_host_port) {
                return Err(exit::UsageError::new(format!(
                    "the relay address {r:?} (from {}) is not HOST:PORT: use a name or IPv4 address and a port (relay.example.org:9009), an IPv6 address in brackets ([::1]:9009), or several separated by commas",
                    self.relay_origin()
                ))
                .into());
            }
        }
        RELAY_GIVEN.store(relay.is_some(), std::sync::atomic::Ordering::Relaxed);
        // Checked here, not by clap: TALLOW_RELAY_ONLY=0 must not clash.
        if self.relay_only && self.lan_only {
            return Err(exit::UsageError::new(
                "--relay-only and --lan-only exclude each other: keep one",
            )
            .into());
        }
        if relay.is_none() && self.relay_only {
            return Err(exit::UsageError::new(
                "--relay-only needs a relay: pass --relay HOST:PORT or set TALLOW_RELAY (start one with `tallow relay`)",
            )
            .into());
        }
        if relay.is_none() && self.no_lan {
            return Err(exit::UsageError::new(
                "no relay given and --no-lan: pass --relay HOST:PORT or set TALLOW_RELAY (start one with `tallow relay`)",
            )
            .into());
        }
        let proxy = match (&self.proxy, &relay) {
            (_, None) => None,
            (Some(url), Some(_)) => Some(
                tallow_net::Proxy::parse(url)
                    .map_err(|e| exit::UsageError::new(format!("invalid --proxy: {e}")))?,
            ),
            // A list is judged by its first relay's host.
            (None, Some(list)) => {
                let first = list.split(',').next().unwrap_or_default().trim();
                let host = first.rsplit_once(':').map_or(first, |(host, _)| host);
                match tallow_net::Proxy::from_env(host) {
                    Some(Ok(proxy)) => Some(proxy),
                    // Set for other tools, perhaps: not a reason to fail.
                    Some(Err(e)) => {
                        say!("warning: ignoring ALL_PROXY ({e}); reaching the relay directly (pass --proxy to choose one)");
                        None
                    }
                    None => None,
                }
            }
        };
        Ok(Route {
            relay,
            relay_password: self.relay_password.clone(),
            proxy,
            lan: !self.no_lan && !self.relay_only,
            discovery_port: self.discovery_port,
            direct: !self.relay_only,
        })
    }

    /// Where the relay address came from, for advice about it.
    fn relay_origin(&self) -> String {
        let typed = std::env::args_os().any(|a| {
            let a = a.to_string_lossy();
            a == "--relay" || a.starts_with("--relay=")
        });
        match &self.relay {
            Some(_) if typed => "--relay".to_owned(),
            Some(_) => "TALLOW_RELAY".to_owned(),
            None => match config::path() {
                Ok(path) => format!(
                    "{} (change it with `tallow config set relay HOST:PORT`)",
                    path.display()
                ),
                Err(_) => "the config file".to_owned(),
            },
        }
    }

    /// Name where an unreachable relay's address came from.
    fn explain(&self, e: tallow_net::NetError) -> anyhow::Error {
        match e {
            tallow_net::NetError::Connect { .. } => {
                let origin = self.relay_origin();
                anyhow::Error::new(e).context(format!("the relay address comes from {origin}"))
            }
            other => other.into(),
        }
    }

    fn deadlines(&self) -> Deadlines {
        let idle = Duration::from_secs(self.idle_timeout);
        Deadlines {
            idle,
            handshake: idle.min(Deadlines::default().handshake),
            pairing: Duration::from_secs(self.wait_timeout),
            ..Deadlines::default()
        }
    }
}

fn main() -> ExitCode {
    // Parsed from this copy, so the secrets are found exactly as parsed.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&args);
    // At once, while this is the only thread (see `argv`).
    hide_secrets(&args, &cli);
    match &cli.command {
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a closed stdout
            // (`tallow completions bash | head`); a closed pipe is not an error.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "tallow", &mut script);
            let mut stdout = std::io::stdout().lock();
            return match stdout.write_all(&script).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    say!("tallow: cannot write the completion script: {e}");
                    ExitCode::from(exit::IO)
                }
            };
        }
        Command::Man { command, dir } => return manual_pages(command.as_deref(), dir.as_deref()),
        _ => {}
    }
    if let Command::Send(send::SendArgs { client, .. })
    | Command::Receive(receive::ReceiveArgs { client, .. }) = &cli.command
    {
        if client.json {
            events::enable();
        }
    }
    // Before any thread exists: reading the umask means setting it.
    receive::init_umask();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("tallow: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (cancel_trigger, cancel) = tallow_transfer::cancel::CancelSignal::new();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Send(args) => until_cancelled(send::run(args, cancel), cancel_trigger).await,
            Command::Receive(args) => {
                until_cancelled(receive::run(args, cancel), cancel_trigger).await
            }
            Command::Relay(args) => relay::run(args).await,
            Command::Config(args) => config::run(args),
            Command::Completions { .. } | Command::Man { .. } => Ok(()),
        }
    });
    // Blocking reader threads may still sit on stdin; don't wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Messages can quote a peer or a relay: never let them drive
            // the terminal.
            let mut message = one_clause_per_cause(&e);
            let relay_given = RELAY_GIVEN.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(advice) = advice::for_error(&e, relay_given) {
                message = advice::append(&message, advice);
            }
            say!("tallow: {}", progress::display_name(&message));
            let code = exit::code_for(&e);
            events::Event::new("error")
                .str("kind", exit::kind_name(code))
                .num("exit_status", u64::from(code))
                .str("message", &message)
                .emit();
            ExitCode::from(code)
        }
    }
}

/// Set once the route is known to include a relay, so that advice never
/// tells someone who named one to pass `--relay`.
pub static RELAY_GIVEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set while what runs tells the other side itself on Ctrl-C and then
/// stops (a transfer pipeline; a receiver asking about the offer while the
/// sender waits); before or after, there is nobody to tell.
pub static CANCEL_TELLS_PEER: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// How long a cancelled pipeline may take to tell the other side: to send
/// its notice, let it drain out to the peer (`ABORT_DRAIN`), and let our
/// own relay pass it on (`ABORT_DRAIN` again).
const CANCEL_GRACE: Duration = Duration::from_secs(6);

/// Run `work`; on Ctrl-C, cancel it. A running transfer then tells the
/// other side "cancelled" and returns; otherwise (waiting, asking), or on a
/// second Ctrl-C, or after [`CANCEL_GRACE`], stop at once.
async fn until_cancelled(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
    trigger: tallow_transfer::cancel::CancelTrigger,
) -> anyhow::Result<()> {
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handling here: never interrupted.
            std::future::pending::<()>().await;
        }
        trigger.cancel();
        // The terminal echoed "^C" where the cursor was: what we say next
        // starts a line of its own.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            say!();
        }
        let transferring = CANCEL_TELLS_PEER.load(std::sync::atomic::Ordering::SeqCst);
        if transferring {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = tokio::time::sleep(CANCEL_GRACE) => {}
            }
        }
        transferring
    };
    tokio::select! {
        done = work => done,
        transferring = interrupted => Err(if transferring {
            tallow_transfer::TransferError::Cancelled.into()
        } else {
            exit::Interrupted.into()
        }),
    }
}

/// A relay password, as clap checks it: at most what the hello carries.
fn relay_password(value: &str) -> Result<String, String> {
    use tallow_protocol::rendezvous::MAX_PASSWORD_LEN;
    if value.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "a relay password is at most {MAX_PASSWORD_LEN} bytes (this one has {})",
            value.len()
        ));
    }
    Ok(value.to_owned())
}

/// `15 min` or `30 s`: how long a wait may last.
fn wait_limit(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 120 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose
/// text the message before already says (an error that prints its source
/// would otherwise read "Permission denied: Permission denied").
fn one_clause_per_cause(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Overwrite the code and passwords given on the command line in this
/// process's argument memory, so other local users cannot read them in the
/// process list; warn if that fails, and go on.
fn hide_secrets(args: &[std::ffi::OsString], cli: &Cli) {
    let (flags, values): (&[&str], Vec<&str>) = match &cli.command {
        // A `--text` message is as private as a file's contents.
        Command::Send(_) => (&["--code", "--relay-password", "--text"], Vec::new()),
        Command::Receive(r) => (
            &["--relay-password"],
            r.code.iter().map(String::as_str).collect(),
        ),
        Command::Relay(_) => (&["--password"], Vec::new()),
        _ => return,
    };
    if let Err(e) = argv::scrub(args, flags, &values) {
        say!("warning: cannot hide the code or password given on the command line from the process list ({e}); other users of this machine may be able to read it (TALLOW_CODE, TALLOW_RELAY_PASSWORD or typing the code when asked keep it out)");
    }
}

/// Say the keys are confirmed; with `--verify`, show the short
/// authentication string and continue only if the user says it matches.
/// The question ends early if the other side answers no first. A frame the
/// other side sent meanwhile (the receiver gets the offer once the sender
/// said yes) is returned, to be read first.
async fn confirm_connected(
    channel: &mut tallow_net::PeerChannel,
    verify: bool,
    us: tallow_protocol::Role,
    deadlines: &Deadlines,
) -> anyhow::Result<Option<Vec<u8>>> {
    use tallow_protocol::message::AbortKind;
    let mut connected = events::Event::new("connected")
        .str("verification", &channel.short_authentication_string)
        .str("route", channel.via.kind());
    let mut why_relay = String::new();
    if let Some(no_direct) = &channel.no_direct {
        connected = connected.str("no_direct", no_direct.kind());
        why_relay = format!(" ({no_direct})");
    }
    connected.emit();
    say!(
        "Connected {}{why_relay}; keys confirmed (ML-KEM-1024 + X25519, authenticated by the code).",
        channel.via
    );
    // Shown without --verify too: the other side may have asked for it
    // and wait for this one to read it out.
    say!(
        "Verification string: {}",
        channel.short_authentication_string
    );
    if !verify {
        return Ok(None);
    }
    let question = format!("Does the {} show the same verification string?", us.peer());
    let (answer, early) = ask_unless_stopped(
        &format!("{question} [y/N] "),
        deadlines,
        &mut channel.reader,
        us.peer(),
    )
    .await?;
    let same = answer == "y" || answer == "yes";
    if same {
        return Ok(early);
    }
    let detail = format!("the {us} said the verification strings differ");
    tallow_transfer::notice::tell_peer(&mut channel.writer, AbortKind::Cancelled, &detail).await;
    Err(exit::Refused(
        "verification strings differ: someone may be intercepting the connection; nothing was transferred".into(),
    )
    .into())
}

/// Ask on the terminal while the other side may speak: if it stops (its
/// `Abort`, or a closed connection) before the answer, the question ends
/// with its reason instead of waiting for a person who no longer matters.
/// Another frame that arrives meanwhile (the sender's offer, once it said
/// yes to `--verify`) is returned with the answer.
async fn ask_unless_stopped(
    prompt: &str,
    deadlines: &Deadlines,
    reader: &mut tallow_net::channel::ChannelReader<tokio::net::tcp::OwnedReadHalf>,
    peer: tallow_protocol::Role,
) -> anyhow::Result<(String, Option<Vec<u8>>)> {
    use tallow_protocol::transport::FrameSource;
    use tallow_transfer::TransferError;
    let answer = ask(prompt, deadlines.decision);
    tokio::pin!(answer);
    let mut early = None;
    loop {
        tokio::select! {
            answer = &mut answer => return Ok((answer?, early)),
            () = reader.wait_for_data(), if early.is_none() => {
                let mut frame = Vec::new();
                if let Err(e) = reader.recv_frame(&mut frame, Some(deadlines.idle)).await {
                    say!();
                    return Err(TransferError::from(e).into());
                }
                if let Some(stopped) = TransferError::from_abort_frame(&frame, peer) {
                    say!();
                    return Err(stopped.into());
                }
                early = Some(frame);
            }
        }
    }
}

/// One route to the other side failed while another is still being tried.
fn warn_route_failed(e: &tallow_net::NetError) {
    say!("{}", route_failed_warning(&e.to_string()));
}

/// The warning for a route that gave up, `reason` saying why. After a full
/// stop or a question it is a sentence of its own ("… with this code?;
/// still trying" reads badly).
fn route_failed_warning(reason: &str) -> String {
    let reason = progress::display_name(reason);
    if reason.ends_with(['?', '.', '!']) {
        format!("warning: {reason} Still trying the other route.")
    } else {
        format!("warning: {reason}; still trying the other route")
    }
}

/// `tallow man`: one page to stdout, or every page into `dir`.
fn manual_pages(command: Option<&str>, dir: Option<&Path>) -> ExitCode {
    let mut cli = stop_before_env_notes(Cli::command().disable_help_subcommand(true));
    cli.build();
    let written = if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(cli, dir))
            .map(|()| {
                say!("Wrote the manual pages into {}.", dir.display());
            })
    } else {
        let page = match command {
            None => cli,
            Some(name) => match cli.find_subcommand(name) {
                Some(sub) => sub.clone(),
                None => {
                    let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
                    say!(
                        "tallow: there is no command {name:?}; pages exist for: {}",
                        names.join(", ")
                    );
                    return ExitCode::from(exit::USAGE);
                }
            },
        };
        clap_mangen::Man::new(page).render(&mut std::io::stdout())
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // `tallow man receive | head`: a reader that had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            say!("tallow: cannot write the manual page: {e}");
            ExitCode::from(exit::IO)
        }
    }
}

/// A manual page puts "May also be specified with the … environment
/// variable" right after an option's text, which `--help` style leaves
/// without a full stop: give those texts one, in `cmd` and every command
/// below it.
fn stop_before_env_notes(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|arg| {
        let text = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|t| t.to_string());
        match text {
            Some(text) if arg.get_env().is_some() && !text.ends_with('.') => {
                arg.long_help(format!("{text}."))
            }
            _ => arg,
        }
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    names.iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, stop_before_env_notes)
    })
}

/// Ask a yes/no question on stderr and read the answer from stdin, within
/// `deadline`. Anything but `y`/`yes` is a no.
async fn ask_yes_no(question: &str, deadline: Duration) -> anyhow::Result<bool> {
    let answer = ask(&format!("{question} [y/N] "), deadline).await?;
    Ok(answer == "y" || answer == "yes")
}

/// Print `prompt` on stderr and read a line from stdin within `deadline`;
/// the answer trimmed and in lowercase.
async fn ask(prompt: &str, deadline: Duration) -> anyhow::Result<String> {
    use std::io::Write;
    discard_typed_ahead();
    let _ = write!(std::io::stderr(), "{prompt}");
    let _ = std::io::stderr().flush();
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(deadline, read).await.map_err(|_| {
        anyhow::anyhow!(
            "no answer within {} s; nothing was transferred",
            deadline.as_secs()
        )
    })???;
    Ok(line.trim().to_ascii_lowercase())
}

/// Forget keys typed on the terminal before a question is shown: an Enter
/// pressed while the transfer seemed stuck is not the answer to a question
/// nobody has seen yet (it would decline an offer, or report that the
/// verification strings differ).
pub fn discard_typed_ahead() {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let _ = rustix::termios::tcflush(&stdin, rustix::termios::QueueSelector::IFlush);
    }
}

#[cfg(test)]
mod tests {
    use super::route_failed_warning;

    #[test]
    fn a_route_that_gave_up_is_said_in_a_sentence_that_reads() {
        assert_eq!(
            route_failed_warning("no sender found: is the sender running, with this code?"),
            "warning: no sender found: is the sender running, with this code? Still trying the other route."
        );
        assert_eq!(
            route_failed_warning("cannot reach the relay 127.0.0.1:1"),
            "warning: cannot reach the relay 127.0.0.1:1; still trying the other route"
        );
    }
}
