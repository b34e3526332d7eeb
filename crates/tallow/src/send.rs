//! `tallow send`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rand_core::OsRng;
use tallow_crypto::code::DEFAULT_WORDS;
use tallow_crypto::CodePhrase;
use tallow_net::session::{open_as_sender, ABORT_DRAIN};
use tallow_protocol::limits::DEFAULT_CHUNK_SIZE;
use tallow_protocol::message::MAX_TEXT_LEN;
use tallow_protocol::transport::Prefetched;
use tallow_protocol::Role;
use tallow_transfer::cancel::CancelSignal;
use tallow_transfer::send::{send_text, send_transfer, Compression, SendOptions};
use tallow_transfer::source::SourceTree;
use tallow_transfer::TransferError;

use crate::events::Event;
use crate::exit::UsageError;
use crate::progress::{display_name, human_bytes, names_summary, plural, ProgressLine};
use crate::{confirm_connected, warn_route_failed, ClientArgs};

#[derive(Args)]
pub struct SendArgs {
    /// Files and folders to send (folders with everything inside, keeping
    /// permissions and modification times; symlinks inside are skipped).
    /// `-` sends standard input as a file named `stdin`.
    #[arg(required_unless_present = "text", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Send this text instead of files; the receiver prints it.
    #[arg(long, value_name = "TEXT", conflicts_with = "paths")]
    text: Option<String>,
    /// Compress chunks with zstd: `auto` picks the level from the measured
    /// speed (harder on a slow link, less or not at all when the CPU is the
    /// limit) and backs off on data that does not shrink, `zstd` tries
    /// every chunk (its level follows the link too), `none` never
    /// compresses. Default: `compress` from `tallow config`, else auto.
    #[arg(long, value_name = "MODE", env = "TALLOW_COMPRESS")]
    compress: Option<CompressArg>,
    /// Use this code phrase instead of a random one: digits, then words
    /// (e.g. 4821-alpha-bravo-charlie). Weak phrases get a warning. Given
    /// here it is hidden from the process list once tallow starts (Linux),
    /// not before; TALLOW_CODE keeps it out entirely.
    #[arg(long, value_name = "CODE", env = "TALLOW_CODE", hide_env_values = true)]
    code: Option<String>,
    /// Also show the receive command as a QR code, for a phone's camera.
    #[arg(long)]
    qr: bool,
    /// Words in a generated code (3-8; each adds 12.9 bits).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=8), conflicts_with = "code")]
    words: u8,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompressArg {
    Auto,
    Zstd,
    None,
}

pub async fn run(args: SendArgs, cancel: CancelSignal) -> anyhow::Result<()> {
    let compress = match args.compress {
        Some(c) => c,
        None => match crate::config::get("compress")?.as_deref() {
            None | Some("auto") => CompressArg::Auto,
            Some("zstd") => CompressArg::Zstd,
            Some("none") => CompressArg::None,
            Some(_) => {
                return Err(crate::exit::UsageError::new(
                    "the config's compress must be auto, zstd or none: fix it with `tallow config set compress auto`",
                )
                .into())
            }
        },
    };
    let route = args.client.route()?;
    let deadlines = args.client.deadlines();
    if args.text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_LEN) {
        return Err(
            UsageError::new("--text takes at most 64 KiB; send longer text as a file").into(),
        );
    }
    // Standard input is copied to a private temporary file first: the
    // offer needs its size, and hashing and resume need to read it again.
    let mut _stdin_copy = None;
    let mut paths = args.paths.clone();
    if paths.len() == 1 && paths[0] == Path::new("-") {
        let (dir, path) = spool_stdin()?;
        _stdin_copy = Some(dir);
        paths = vec![path];
    }
    // Check every file before anything touches the network.
    let transfer = match &args.text {
        Some(_) => SourceTree::scan(&[], DEFAULT_CHUNK_SIZE)?,
        None => SourceTree::scan(&paths, DEFAULT_CHUNK_SIZE)?,
    };
    if !transfer.skipped().is_empty() {
        let list: Vec<String> = transfer
            .skipped()
            .iter()
            .map(|p| display_name(&p.to_string_lossy()))
            .collect();
        say!(
            "warning: skipping {} symbolic link{} or special file{} (never followed): {}",
            list.len(),
            if list.len() == 1 { "" } else { "s" },
            if list.len() == 1 { "" } else { "s" },
            list.join(", ")
        );
    }
    let code = match &args.code {
        Some(given) => {
            let code = CodePhrase::parse(given).context("invalid --code")?;
            if code.is_weaker_than_generated() {
                say!(
                    "warning: this code is easier to guess than a generated one (about {:.0} bits instead of {:.0}); anyone who guesses it during the transfer could receive your files",
                    code.strength_bits(),
                    CodePhrase::generate(&mut OsRng, DEFAULT_WORDS).strength_bits()
                );
            }
            code
        }
        None => CodePhrase::generate(&mut OsRng, usize::from(args.words)),
    };

    let manifest = transfer.manifest();
    match &args.text {
        Some(text) => say!(
            "Sending a text message ({}).",
            human_bytes(text.len() as u64)
        ),
        None => say!(
            "Sending {} file{} ({}): {}",
            manifest.files.len(),
            if manifest.files.len() == 1 { "" } else { "s" },
            human_bytes(manifest.total_size()),
            names_summary(&manifest.top_level_names())
        ),
    }
    // The code is shown once the relay has us, so a dead relay is reported
    // before anyone is told to type anything.
    // What the receiver must type, with the route options it needs too.
    // With the local network too, the code waits for the relay's answer; a
    // relay that failed is then not named to the receiver.
    let relay_failed = std::sync::atomic::AtomicBool::new(false);
    let on_route_failed = |e: &tallow_net::NetError| {
        if !e.on_local_network() {
            relay_failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        warn_route_failed(e);
    };
    let show_code = |code: &CodePhrase| {
        let mut receive_command = String::from("tallow receive ");
        if let Some(relay) = &route.relay {
            if !relay_failed.load(std::sync::atomic::Ordering::Relaxed) {
                receive_command.push_str(&format!("--relay {relay} "));
            }
        }
        if route.lan && route.discovery_port != tallow_net::lan::DEFAULT_DISCOVERY_PORT {
            receive_command.push_str(&format!("--discovery-port {} ", route.discovery_port));
        }
        // Both sides must show the string for the comparison to mean anything.
        if args.client.verify {
            receive_command.push_str("--verify ");
        }
        receive_command.push_str(code.as_str());
        Event::new("code")
            .str("code", code.as_str())
            .str("receive_command", &receive_command)
            .emit();
        say!("Code: {}", code.as_str());
        if args.qr {
            match qrcode::QrCode::new(receive_command.as_bytes()) {
                Ok(qr) => say!(
                    "{}",
                    qr.render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build()
                ),
                Err(e) => say!("warning: cannot draw the QR code ({e})"),
            }
        }
        say!("On the other machine run:\n  {receive_command}");
    };
    let shown = std::sync::atomic::AtomicBool::new(false);
    // A relay chooses the code's number unless the user gave a code.
    let allocate = args.code.is_none();
    let (mut channel, relay_guard, code) = open_as_sender(
        &route,
        code,
        allocate,
        &deadlines,
        |code| {
            show_code(code);
            shown.store(true, std::sync::atomic::Ordering::Relaxed);
            say!(
                "Waiting for the receiver… (the code works for {})",
                crate::wait_limit(deadlines.pairing)
            );
        },
        &on_route_failed,
    )
    .await
    .map_err(|e| args.client.explain(e))?;
    if !shown.load(std::sync::atomic::Ordering::Relaxed) {
        show_code(&code);
    }
    let early =
        match confirm_connected(&mut channel, args.client.verify, Role::Sender, &deadlines).await {
            Ok(early) => early,
            Err(e) => {
                drop(channel);
                relay_guard.drain(ABORT_DRAIN).await;
                return Err(e);
            }
        };
    let route = channel.via.clone();
    let closing = channel.closing;
    let reader = Prefetched::new(early, channel.reader);
    if let Some(text) = &args.text {
        send_text(text, channel.writer, reader, &deadlines).await?;
        Event::new("done")
            .num("files", 0)
            .num("bytes", text.len() as u64)
            .emit();
        say!("Text delivered.");
        return Ok(());
    }

    // From here a Ctrl-C is told to the receiver (the pipeline sees it).
    crate::CANCEL_TELLS_PEER.store(true, std::sync::atomic::Ordering::SeqCst);
    say!("Offer sent; waiting for the receiver to accept…");
    let mut line = ProgressLine::new(args.client.quiet, manifest, &route);
    let total = manifest.total_size();
    let count = manifest.files.len();
    let options = SendOptions {
        compression: match compress {
            CompressArg::Auto => Compression::Auto,
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::None => Compression::None,
        },
        cancel,
        ..SendOptions::default()
    };
    let result = send_transfer(
        transfer,
        channel.writer,
        reader,
        &deadlines,
        options,
        &mut |p| line.update(p),
    )
    .await;
    line.finish();
    if result.is_err() {
        // Our reason (an Abort) waits behind the chunks still queued for
        // the receiver: let them go out before we close.
        closing.finish(ABORT_DRAIN).await;
    }
    // Through our own relay, a last message (an Abort) may still be in
    // flight to the receiver.
    relay_guard.drain(ABORT_DRAIN).await;
    if matches!(result, Err(TransferError::Cancelled)) && !line.accepted() {
        // Stopped while the receiver was still deciding: nothing was sent,
        // so there is nothing to resume.
        return Err(crate::exit::Interrupted.into());
    }
    let failed = result?;
    // Files the receiver kept as it had them were neither sent nor compared.
    let (kept, kept_bytes) = line.kept();
    let failed_bytes: u64 = failed.iter().map(|f| f.size).sum();
    let sent = count as u64 - kept - failed.len() as u64;
    let kept_bytes = kept_bytes + failed_bytes;
    Event::new("done")
        .num("files", sent)
        .num("bytes", total - kept_bytes)
        .secs("seconds", line.elapsed().as_secs_f64())
        .str("route", line.route())
        .emit();
    let kept_note = match kept {
        0 => String::new(),
        _ => format!(
            "; it kept {} it already had (not sent, not compared)",
            plural(kept, "file")
        ),
    };
    if sent == 0 {
        say!("Sent nothing: the receiver already had every file and kept its own (not compared).");
    } else {
        say!(
            "Sent {} ({}) {}; the receiver verified every byte (BLAKE3 and Merkle root){kept_note}.",
            plural(sent, "file"),
            human_bytes(total - kept_bytes),
            line.took(),
        );
    }
    if !failed.is_empty() {
        return Err(crate::exit::Partial(failed).into());
    }
    Ok(())
}

/// Copy standard input into `stdin` in a new private temporary folder.
fn spool_stdin() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("tallow-stdin-")
        .tempdir()
        .context("cannot create a temporary folder for standard input")?;
    let path = dir.path().join("stdin");
    let mut file = std::fs::File::create(&path)
        .context("cannot create a temporary file for standard input")?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file).context("cannot read standard input")?;
    Ok((dir, path))
}
