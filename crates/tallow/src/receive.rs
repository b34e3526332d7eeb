//! `tallow receive`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use tallow_crypto::code::DEFAULT_WORDS;
use tallow_crypto::CodePhrase;
use tallow_net::session::{open_as_receiver, ABORT_DRAIN};
use tallow_net::{ChannelReader, ChannelWriter};
use tallow_protocol::limits::Deadlines;
use tallow_protocol::machine::PeerMisbehaved;
use tallow_protocol::message::Message;
use tallow_protocol::path::PARTIAL_SUFFIX;
use tallow_protocol::transport::Prefetched;
use tallow_protocol::wire::Decode;
use tallow_protocol::Role;
use tallow_transfer::cancel::CancelSignal;
use tallow_transfer::checkpoint::{self, LocalKey, RecordedProgress};
use tallow_transfer::placement::OutputDir;
use tallow_transfer::receive::{receive_offer, IncomingOffer, Offered, Placement, ReceiveOptions};
use tallow_transfer::TransferError;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::events::Event;
use crate::exit::UsageError;
use crate::progress::{
    display_name, human_age, human_bytes, names_summary, plural, some_names_summary, ProgressLine,
};
use crate::{ask_unless_stopped, ask_yes_no, confirm_connected, warn_route_failed, ClientArgs};

#[derive(Args)]
pub struct ReceiveArgs {
    /// The code phrase the sender shows, e.g. 4821-alpha-bravo-charlie
    /// (dashes or spaces, any case, no quotes needed: `4821 alpha bravo
    /// charlie` works). Given here it is hidden from the process list once
    /// tallow starts (Linux), not before, and the shell may keep it in its
    /// history; left out, it is read from TALLOW_CODE or asked for (Tab
    /// completes each word), which keeps it out of both.
    #[arg(value_name = "CODE", num_args = 0..)]
    pub(crate) code: Vec<String>,
    /// Folder to write into (created if missing; default: `out` from
    /// `tallow config`, else the current folder). `-` writes a single-file
    /// transfer to standard output, once it has verified.
    #[arg(long, short, value_name = "DIR", env = "TALLOW_OUT")]
    out: Option<PathBuf>,
    /// Accept the offer without asking (one that adds to folders you
    /// already have or has hidden names also needs --merge / --allow-hidden).
    #[arg(long, short)]
    yes: bool,
    /// Replace files that already exist in the output folder.
    #[arg(long)]
    overwrite: bool,
    /// Keep files that already exist in the output folder: the sender does
    /// not send them (it learns which files you kept).
    #[arg(long, conflicts_with = "overwrite")]
    skip_existing: bool,
    /// With --yes: accept an offer that adds files to folders that already
    /// exist in the output folder (without --yes they are listed and you
    /// are asked).
    #[arg(long)]
    merge: bool,
    /// With --yes: accept an offer with hidden (dot) names at its top
    /// level, such as .ssh or .bashrc (without --yes they are listed and
    /// you are asked).
    #[arg(long)]
    allow_hidden: bool,
    /// Start over instead of continuing an interrupted transfer of the
    /// same files (by default what is already here is kept and not sent again).
    #[arg(long)]
    no_resume: bool,
    /// List interrupted transfers in the output folder, then exit.
    #[arg(long, conflicts_with = "json")]
    list_partial: bool,
    /// Delete interrupted transfers (checkpoint and partial files) in the
    /// output folder not touched for this many days (0: all), then exit.
    #[arg(long, value_name = "DAYS")]
    clean_partial_older_than: Option<u64>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

pub async fn run(args: ReceiveArgs, cancel: CancelSignal) -> anyhow::Result<()> {
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => crate::config::get("out")?.map_or_else(|| PathBuf::from("."), PathBuf::from),
    };
    // Said as a full path: "into ." reads badly, and a sender's message
    // quoting it could be mistaken for punctuation.
    let out = if out == Path::new("-") {
        out
    } else {
        std::path::absolute(&out).unwrap_or(out)
    };
    if args.list_partial || args.clean_partial_older_than.is_some() {
        return partials(&args, &out);
    }
    let route = args.client.route()?;
    let deadlines = args.client.deadlines();
    let given = (!args.code.is_empty()).then(|| args.code.join("-"));
    let typed = match given.or_else(|| std::env::var("TALLOW_CODE").ok()) {
        Some(code) => code,
        None if std::io::stdin().is_terminal() => ask_code()?,
        None => return Err(crate::exit::UsageError::new(
            "no code: pass it as an argument, set TALLOW_CODE, or run in a terminal to be asked",
        )
        .into()),
    };
    let mut code = CodePhrase::parse(&typed).context("invalid code")?;
    let terminal = std::io::stdin().is_terminal();
    // Everything that would end the sender's one try is caught before
    // connecting: a mistyped word, and no way to answer the offer.
    for (typo, word) in code.suggestions() {
        if terminal {
            let question = format!("{typo:?} is not in the word list. Use {word:?} instead?");
            if ask_yes_no(&question, deadlines.decision).await? {
                let fixed = code
                    .as_str()
                    .split('-')
                    .map(|w| if w == typo { word } else { w })
                    .collect::<Vec<_>>()
                    .join("-");
                code = CodePhrase::parse(&fixed).context("invalid code")?;
            }
        } else {
            say!("warning: {typo:?} is not in the word list; did you mean {word:?}? (trying the code as typed)");
        }
    }
    // Too few words is most often a word left out, and a word not in the
    // list (one with no near list word, or whose correction was turned
    // down) may be a slip too: one more look, whose default is not to try,
    // before the sender's try is spent (a code the sender chose with
    // --code is still taken).
    if terminal {
        let unknown = code.unlisted_words();
        let question = if code.word_count() < DEFAULT_WORDS {
            Some(format!(
                "This code has {} after the number; a generated one has {DEFAULT_WORDS}. Is it complete?",
                plural(code.word_count() as u64, "word")
            ))
        } else if !unknown.is_empty() {
            let names: Vec<String> = unknown.iter().map(|w| format!("{w:?}")).collect();
            Some(format!(
                "{} {} not in the word list (generated codes use only listed words). Use the code as typed?",
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" }
            ))
        } else {
            None
        };
        if let Some(question) = question {
            if !ask_yes_no(
                &format!("{question} A wrong code ends the sender's transfer."),
                deadlines.decision,
            )
            .await?
            {
                return Err(UsageError::new(
                    "code not tried: check it with the sender and run tallow receive again (nothing was sent)",
                )
                .into());
            }
        }
    } else if code.word_count() < DEFAULT_WORDS {
        say!(
            "warning: this code has {} after the number and a generated one has {DEFAULT_WORDS}; if a word is missing the sender's transfer ends (trying it as typed)",
            plural(code.word_count() as u64, "word")
        );
    }
    if !args.yes && !terminal {
        return Err(UsageError::new(
            "no terminal to confirm the offer: pass --yes to accept without asking",
        )
        .into());
    }

    if route.lan {
        // Each route with its own limit, said once (the relay's "waiting"
        // below would only repeat it).
        let relay = match &route.relay {
            Some(relay) => format!(
                " and through the relay {relay} (up to {})",
                crate::wait_limit(deadlines.pairing)
            ),
            None => String::new(),
        };
        say!(
            "Looking for the sender on the local network (up to {}){relay}…",
            crate::wait_limit(tallow_net::session::LAN_WAIT.min(deadlines.pairing))
        );
    }
    let mut channel = open_as_receiver(
        &route,
        &code,
        &deadlines,
        || {
            if !route.lan {
                say!(
                    "Waiting for the sender… (up to {})",
                    crate::wait_limit(deadlines.pairing)
                )
            }
        },
        &warn_route_failed,
    )
    .await
    .map_err(|e| args.client.explain(e))?;
    let early =
        confirm_connected(&mut channel, args.client.verify, Role::Receiver, &deadlines).await?;

    let route = channel.via.clone();
    let closing = channel.closing;
    let reader = Prefetched::new(early, channel.reader);
    let offered = match receive_offer(channel.writer, reader, &deadlines).await {
        Ok(offered) => offered,
        Err(e) => {
            // A refused page was told to the sender, still sending more.
            closing.finish(ABORT_DRAIN).await;
            return Err(e.into());
        }
    };
    let mut offer = match offered {
        Offered::Files(offer) => offer,
        Offered::Text(text) => {
            show_text(&text);
            Event::new("done")
                .num("files", 0)
                .num("bytes", text.len() as u64)
                .emit();
            return Ok(());
        }
    };
    let manifest = offer.manifest().clone();
    // `--out -`: a single file, written to stdout once it has verified.
    let to_stdout = out == Path::new("-");
    let mut _staging = None;
    let out = if to_stdout {
        if manifest.files.len() != 1 || !manifest.dirs.is_empty() {
            let reason = "it asked for a single file (--out -)";
            let _ = offer.decline(reason, &deadlines).await;
            return Err(UsageError::new(
                "--out - takes a single file, and this offer is not one; pass --out DIR",
            )
            .into());
        }
        let dir = tempfile::Builder::new()
            .prefix("tallow-stdout-")
            .tempdir()
            .context("cannot create a temporary folder to verify the file in")?;
        let path = dir.path().to_path_buf();
        _staging = Some(dir);
        path
    } else {
        out
    };
    let count = manifest.files.len();
    let total = manifest.total_size();
    let top = manifest.top_level_names();
    say!(
        "Offer: {count} file{} ({}): {}",
        if count == 1 { "" } else { "s" },
        human_bytes(total),
        names_summary(&top)
    );
    let left_out = &manifest.left_out;
    if left_out.count > 0 {
        let names: Vec<&str> = left_out.names.iter().map(String::as_str).collect();
        say!(
            "The sender left out {} symbolic link{} or special file{} found in its folders (links are never followed; nothing arrives for them): {}",
            left_out.count,
            if left_out.count == 1 { "" } else { "s" },
            if left_out.count == 1 { "" } else { "s" },
            some_names_summary(&names, left_out.count)
        );
    }

    Event::new("offer")
        .num("files", count as u64)
        .num("bytes", total)
        .strs("names", top.iter().copied())
        .num("left_out", left_out.count)
        .strs("left_out_names", left_out.names.iter().map(String::as_str))
        .str("out", &out.display().to_string())
        .emit();
    let mut options = ReceiveOptions {
        out_dir: out.clone(),
        overwrite: args.overwrite,
        skip_existing: args.skip_existing,
        resume: !args.no_resume,
        umask: umask(),
        local_key: local_key(),
        cancel: cancel.clone(),
    };
    // Reading back a partial file can take a while: not on the reactor.
    let plan = tokio::task::block_in_place(|| offer.plan(&options));
    if plan.bytes > 0 {
        Event::new("resumed")
            .num("bytes", plan.bytes)
            .num("total", total)
            .emit();
    }
    match plan.kept_from_earlier() {
        _ if !plan.source_changed => {}
        0 => say!("The files changed since the interrupted transfer (size or modification time): starting over."),
        kept => say!(
            "Some files changed since the interrupted transfer (size or modification time): they are sent again; the {} that did not are here already and are kept.",
            plural(kept as u64, "file")
        ),
    }
    if plan.bytes > 0 {
        say!(
            "Resuming: {} of {} already here.",
            human_bytes(plan.bytes),
            human_bytes(total)
        );
    }
    if !to_stdout {
        say!("Into: {}{}", out.display(), free_space(&out));
    }
    // "Keep yours" answered for files in the way.
    let mut chose_to_keep = false;
    let skip = loop {
        let e = match offer.check_destination(&options, &plan) {
            Ok(skip) => break skip,
            Err(e) => e,
        };
        // On a terminal, files that are in the way can be replaced or kept
        // (unless something else is wrong too: then that error stands).
        let existing = match (&e, args.yes) {
            (TransferError::DestinationExists { .. }, false) => {
                let keep_all = ReceiveOptions {
                    skip_existing: true,
                    ..options.clone()
                };
                offer.check_destination(&keep_all, &plan).ok()
            }
            _ => None,
        };
        if let Some(existing) = existing {
            let names: Vec<&str> = existing
                .files()
                .map(|f| manifest.files.at(f as usize).path)
                .collect();
            let question = format!(
                "{} of this offer already exist{} here: {}. Replace {} [r], keep yours and skip {} [s], or stop [N]?",
                plural(names.len() as u64, "file"),
                if names.len() == 1 { "s" } else { "" },
                names_summary(&names),
                if names.len() == 1 { "it" } else { "them" },
                if names.len() == 1 { "it" } else { "them" },
            );
            let asked =
                ask_while_sender_waits(&mut offer, &format!("{question} "), &deadlines, &cancel)
                    .await?;
            let Some(answer) = asked else {
                closing.finish(ABORT_DRAIN).await;
                return Err(crate::exit::Interrupted.into());
            };
            match answer.as_str() {
                "r" | "replace" => {
                    options.overwrite = true;
                    continue;
                }
                "s" | "skip" => {
                    options.skip_existing = true;
                    chose_to_keep = true;
                    continue;
                }
                _ => {
                    let _ = offer.decline(DECLINED, &deadlines).await;
                    return Err(crate::exit::Refused(format!(
                        "offer declined: {} of it already exist{} here; nothing was written",
                        plural(names.len() as u64, "file"),
                        if names.len() == 1 { "s" } else { "" },
                    ))
                    .into());
                }
            }
        }
        // The sender learns that we cannot accept, never what is here.
        let reason = match e {
            TransferError::NoSpace { .. } => "it has no space for it",
            _ => NOT_ACCEPTED,
        };
        let _ = offer.decline(reason, &deadlines).await;
        return Err(e.into());
    };
    let skipped_bytes = skip.bytes(&manifest);
    if !skip.is_empty() {
        say!(
            "Keeping {} already here ({}); the sender will not send {}.",
            plural(skip.count(), "file"),
            human_bytes(skipped_bytes),
            if skip.count() == 1 { "it" } else { "them" }
        );
        Event::new("skipped")
            .num("files", skip.count())
            .num("bytes", skipped_bytes)
            .emit();
    }
    let placement = offer.placement(&options, &plan);
    show_placement(&placement);
    if args.yes {
        let mut flags = Vec::new();
        if !placement.existing_folders.is_empty() && !args.merge {
            flags.push("--merge");
        }
        if !placement.hidden.is_empty() && !args.allow_hidden {
            flags.push("--allow-hidden");
        }
        if !flags.is_empty() {
            let _ = offer.decline(NOT_ACCEPTED, &deadlines).await;
            return Err(crate::exit::Refused(format!(
                "not accepted with --yes alone: {}; nothing was written. Check the list above, then pass {} to accept it, or receive into an empty folder with --out",
                placement_summary(&placement),
                flags.join(" and ")
            ))
            .into());
        }
    } else if chose_to_keep && skip.count() as usize == manifest.files.len() {
        // Every file is one of those the user just chose to keep: there is
        // nothing left to say yes to.
    } else {
        let asked =
            ask_while_sender_waits(&mut offer, "Accept? [y/N] ", &deadlines, &cancel).await?;
        let Some(answer) = asked else {
            closing.finish(ABORT_DRAIN).await;
            return Err(crate::exit::Interrupted.into());
        };
        if !matches!(answer.as_str(), "y" | "yes") {
            offer.decline(DECLINED, &deadlines).await?;
            return Err(crate::exit::Refused("offer declined; nothing was written".into()).into());
        }
    }

    // Skipped files count as here from the start, as resumed bytes do.
    let mut line = ProgressLine::new(args.client.quiet, &manifest, &route)
        .resuming_from(plan.bytes + skipped_bytes);
    crate::CANCEL_TELLS_PEER.store(true, std::sync::atomic::Ordering::SeqCst);
    let result = offer
        .accept(&options, plan, &deadlines, &mut |p| line.update(p))
        .await;
    line.finish();
    if result.is_err() {
        // Our reason (an Abort) must reach the sender before we go.
        closing.finish(ABORT_DRAIN).await;
    }
    let failed = result?;
    let failed_bytes: u64 = failed.iter().map(|f| f.size).sum();
    let received = count as u64 - skip.count() - failed.len() as u64;
    let skipped_bytes = skipped_bytes + failed_bytes;
    Event::new("done")
        .num("files", received)
        .num("bytes", total - skipped_bytes)
        .secs("seconds", line.elapsed().as_secs_f64())
        .str("route", line.route())
        .emit();
    if to_stdout {
        let path = out.join(manifest.files.at(0).path);
        let mut file = std::fs::File::open(&path).context("cannot reopen the verified file")?;
        let mut stdout = std::io::stdout().lock();
        std::io::copy(&mut file, &mut stdout).context("cannot write to standard output")?;
        stdout.flush().context("cannot write to standard output")?;
    }
    let into = if to_stdout {
        "standard output".to_owned()
    } else {
        out.display().to_string()
    };
    // Kept files were not compared with the sender's: say so.
    let kept = match skip.count() {
        0 => String::new(),
        n => format!(
            " Kept {} that {} already here (not compared with the sender's).",
            plural(n, "file"),
            if n == 1 { "was" } else { "were" }
        ),
    };
    if received == 0 {
        say!("Nothing to receive into {into}.{kept}");
    } else {
        say!(
            "Received {} ({}) into {into} {}; verified: Merkle root and BLAKE3 match.{kept}",
            plural(received, "file"),
            human_bytes(total - skipped_bytes),
            line.took(),
        );
    }
    if !failed.is_empty() {
        return Err(crate::exit::Partial(failed).into());
    }
    Ok(())
}

/// What the sender hears when our user says no (never why: what is here
/// is ours).
const DECLINED: &str = "its user said no";
/// What the sender hears when the offer is refused without asking (with
/// `--yes`, or because of what is here, which it is not told).
const NOT_ACCEPTED: &str = "it could not accept this offer as it is";

/// Ask about the offer; if the sender stops meanwhile (Ctrl-C there), the
/// question ends with its reason.
async fn ask_while_sender_waits(
    offer: &mut IncomingOffer<
        ChannelWriter<OwnedWriteHalf>,
        Prefetched<ChannelReader<OwnedReadHalf>>,
    >,
    prompt: &str,
    deadlines: &Deadlines,
    cancel: &CancelSignal,
) -> anyhow::Result<Option<String>> {
    use std::sync::atomic::Ordering::SeqCst;
    // A Ctrl-C here is told to the sender, who is waiting for the answer.
    crate::CANCEL_TELLS_PEER.store(true, SeqCst);
    let asked = {
        let reader = offer.reader_mut().inner_mut();
        tokio::select! {
            asked = ask_unless_stopped(prompt, deadlines, reader, Role::Sender) => Some(asked),
            () = cancel.cancelled() => None,
        }
    };
    let Some(asked) = asked else {
        // The ^C the terminal echoed ends the question's line.
        say!();
        offer.tell_peer(&TransferError::Cancelled).await;
        crate::CANCEL_TELLS_PEER.store(false, SeqCst);
        return Ok(None);
    };
    crate::CANCEL_TELLS_PEER.store(false, SeqCst);
    let (answer, early) = asked?;
    match early {
        // The sender sends nothing but an Abort before our answer.
        Some(frame) => Err(TransferError::broke(
            Role::Sender,
            PeerMisbehaved::Unexpected {
                got: Message::decode_all(&frame).map_or("an invalid message", |m| m.name()),
                expected: "nothing before the answer to the offer",
            },
        )
        .into()),
        None => Ok(Some(answer)),
    }
}

/// Before asking, however long the offer: everything that would go into a
/// folder that already exists here, and every hidden top-level name
/// (escaped: the names come from the peer). Also as a JSON event.
fn show_placement(placement: &Placement) {
    if placement.is_plain() {
        return;
    }
    if !placement.existing_folders.is_empty() {
        say!("Adds to folders you already have:");
        for folder in &placement.existing_folders {
            let mut shown: Vec<String> = folder.examples.iter().map(|e| display_name(e)).collect();
            if folder.entries > shown.len() {
                shown.push(format!("and {} more", folder.entries - shown.len()));
            }
            say!(
                "  {}/ ({} entr{} from the offer: {})",
                display_name(&folder.name),
                folder.entries,
                if folder.entries == 1 { "y" } else { "ies" },
                shown.join(", ")
            );
        }
    }
    if !placement.hidden.is_empty() {
        let names: Vec<String> = placement.hidden.iter().map(|n| display_name(n)).collect();
        say!("Hidden names: {}", names.join(", "));
    }
    Event::new("placement")
        .strs(
            "existing_folders",
            placement.existing_folders.iter().map(|f| f.name.as_str()),
        )
        .strs("hidden", placement.hidden.iter().map(String::as_str))
        .emit();
}

/// One clause naming what needs consent.
fn placement_summary(placement: &Placement) -> String {
    let names =
        |it: &mut dyn Iterator<Item = &str>| it.map(display_name).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if !placement.existing_folders.is_empty() {
        parts.push(format!(
            "it adds files to folders that already exist here ({})",
            names(&mut placement.existing_folders.iter().map(|f| f.name.as_str()))
        ));
    }
    if !placement.hidden.is_empty() {
        parts.push(format!(
            "it has hidden names ({})",
            names(&mut placement.hidden.iter().map(String::as_str))
        ));
    }
    parts.join(" and ")
}

/// ` (12.0 GiB free)` for the folder, or its nearest existing parent.
fn free_space(out: &Path) -> String {
    out.ancestors()
        .find_map(|a| rustix::fs::statvfs(a).ok())
        .map(|s| {
            format!(
                " ({} free)",
                human_bytes(s.f_bavail.saturating_mul(s.f_frsize))
            )
        })
        .unwrap_or_default()
}

static UMASK: OnceLock<u32> = OnceLock::new();

/// Read the process's umask (by setting it and putting it back). Call
/// before any other thread starts.
pub fn init_umask() {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_raw_mode(0o077));
    rustix::process::umask(old);
    let _ = UMASK.set(old.bits());
}

/// The umask read at start (0o022 if it was not).
fn umask() -> u32 {
    UMASK.get().copied().unwrap_or(0o022)
}

/// The user's checkpoint key (`~/.local/share/tallow/checkpoint.key`),
/// made on first use. Without a data folder, a key for this run only: the
/// transfer works, but an interruption starts over next time.
fn local_key() -> LocalKey {
    let path = directories::ProjectDirs::from("", "", "tallow")
        .map(|d| d.data_dir().join("checkpoint.key"));
    let loaded = match &path {
        Some(path) => {
            LocalKey::load_or_create(path).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Err("no home folder (is HOME set?)".to_owned()),
    };
    loaded.unwrap_or_else(|why| {
        say!("warning: cannot keep resume state ({why}); if this transfer is interrupted it will start over");
        let mut bytes = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        LocalKey::from_bytes(bytes)
    })
}

/// Print a text message. On a terminal, control characters other than
/// newlines and tabs are shown escaped (the text comes from the peer); into
/// a pipe it goes as sent.
fn show_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let shown = if stdout.is_terminal() {
        text.split('\n')
            .map(|line| {
                line.split('\t')
                    .map(display_name)
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        text.to_owned()
    };
    let _ = stdout.write_all(shown.as_bytes());
    if !shown.ends_with('\n') {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
}

/// `--list-partial` and `--clean-partial-older-than`.
fn partials(args: &ReceiveArgs, out: &std::path::Path) -> anyhow::Result<()> {
    // A mistyped folder is said to be one, not reported empty.
    if !out.is_dir() {
        return Err(UsageError::new(format!(
            "there is no folder {}: check --out (or `tallow config set out`)",
            out.display()
        ))
        .into());
    }
    let found = match OutputDir::open(out, false) {
        Ok(dir) => checkpoint::list(&dir, &local_key()),
        Err(_) => Vec::new(),
    };
    let now = SystemTime::now();
    let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    if args.list_partial {
        if found.is_empty() {
            say!("No interrupted transfers in {}.", out.display());
        }
        for cp in &found {
            let done =
                RecordedProgress::from_records(&cp.manifest, &cp.records).bytes(&cp.manifest);
            let names: Vec<String> = cp
                .manifest
                .top_level_names()
                .into_iter()
                .map(display_name)
                .collect();
            out!(
                "{}  {} of {}  last written {}  {}",
                names.join(", "),
                human_bytes(done),
                human_bytes(cp.manifest.total_size()),
                human_age(age(cp.modified)),
                cp.path.display()
            );
        }
    }
    if let Some(days) = args.clean_partial_older_than {
        let limit = Duration::from_secs(days.saturating_mul(86_400));
        let mut cleaned = 0;
        for cp in found.iter().filter(|cp| age(cp.modified) >= limit) {
            for f in cp.manifest.files.iter() {
                let partial = out.join(format!("{}{PARTIAL_SUFFIX}", f.path));
                // Never follow a link: remove_file removes the link itself.
                let _ = std::fs::remove_file(partial);
            }
            std::fs::remove_file(&cp.path)
                .with_context(|| format!("cannot remove {}", cp.path.display()))?;
            cleaned += 1;
        }
        let older = match days {
            0 => String::new(),
            1 => " older than a day".to_owned(),
            _ => format!(" older than {days} days"),
        };
        say!(
            "Removed {cleaned} interrupted transfer{}{older} from {}.",
            if cleaned == 1 { "" } else { "s" },
            out.display()
        );
    }
    Ok(())
}

/// Ask for the code on the terminal, completing its words with Tab (as
/// magic-wormhole does). It shows as typed: a code is spent once the
/// transfer starts, and reading it off the screen before then would race
/// a receiver that is already connecting.
fn ask_code() -> anyhow::Result<String> {
    let term = dialoguer::console::Term::stderr();
    crate::discard_typed_ahead();
    let typed = dialoguer::Input::<String>::new()
        .with_prompt(CODE_PROMPT)
        .completion_with(&CodeWords)
        .interact_text_on(&term);
    match typed {
        Ok(code) => Ok(code),
        Err(dialoguer::Error::IO(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
            say!();
            Err(crate::exit::Interrupted.into())
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot read the code")),
    }
}

/// The question when the code is asked for.
const CODE_PROMPT: &str = "Code (Tab completes a word)";
/// At most this many words are listed for an ambiguous prefix.
const CANDIDATES_SHOWN: usize = 24;

/// Tab completion of the word being typed (not the number before it). A
/// prefix that several words share with nothing to add rings the
/// terminal's bell and lists them under the prompt (as magic-wormhole
/// does), then shows the prompt again; a prefix no word starts with only
/// rings.
struct CodeWords;

/// Where the code's words are split.
fn is_separator(c: char) -> bool {
    c == '-' || c.is_whitespace()
}

impl CodeWords {
    /// The word being typed (lowercase) and where it starts; `None` before
    /// the first separator (the number) or right after one.
    fn last_word(input: &str) -> Option<(usize, String)> {
        let start = input.rfind(is_separator).map(|at| at + 1)?;
        let word = input[start..].to_ascii_lowercase();
        (!word.is_empty()).then_some((start, word))
    }

    /// What the input completes to, if anything: the last word, or the
    /// last two pieces when they begin a hyphenated list word (`t-sh`).
    fn completed(input: &str) -> Option<String> {
        let (start, word) = CodeWords::last_word(input)?;
        // A hyphenated word is tried whole first: "t-sh" is "t-shirt", not
        // "t" and a word starting with "sh".
        if input[..start].ends_with('-') {
            let before = &input[..start - 1];
            let piece_start = before.rfind(is_separator).map_or(0, |at| at + 1);
            let piece = before[piece_start..].to_ascii_lowercase();
            if !piece.is_empty() && !piece.bytes().all(|b| b.is_ascii_digit()) {
                let joined = format!("{piece}-{word}");
                if let Some(done) = tallow_crypto::wordlist::complete(&joined) {
                    return Some(format!("{}{done}", &input[..piece_start]));
                }
            }
        }
        let completed = tallow_crypto::wordlist::complete(&word)?;
        Some(format!("{}{completed}", &input[..start]))
    }

    /// The list words the word being typed could become.
    fn candidates(input: &str) -> &'static [&'static str] {
        match CodeWords::last_word(input) {
            Some((_, word)) => tallow_crypto::wordlist::starting_with(&word),
            None => &[],
        }
    }
}

impl dialoguer::Completion for CodeWords {
    fn get(&self, input: &str) -> Option<String> {
        if let Some(completed) = CodeWords::completed(input) {
            return Some(completed);
        }
        let mut err = std::io::stderr();
        let _ = err.write_all(b"\x07");
        let candidates = CodeWords::candidates(input);
        if (2..=CANDIDATES_SHOWN).contains(&candidates.len()) {
            // The list on lines of its own, then the prompt and the input
            // again: dialoguer rewrites the input it knows of (this one)
            // where the cursor is.
            let _ = write!(
                err,
                "\r\n  {}\r\n{CODE_PROMPT}: {input}",
                candidates.join("  ")
            );
            let _ = err.flush();
            return Some(input.to_owned());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use dialoguer::Completion;

    #[test]
    fn tab_completes_the_word_being_typed_and_never_the_number() {
        let c = super::CodeWords;
        assert_eq!(c.get("4711-abac").as_deref(), Some("4711-abacus-"));
        assert_eq!(
            c.get("4711 abacus ZOOL").as_deref(),
            Some("4711 abacus zoolog")
        );
        // Several words and nothing to add: nothing completed, the words
        // listed (the input is given back unchanged to redraw it).
        assert_eq!(super::CodeWords::completed("4711-abacus-zoo"), None);
        assert_eq!(
            super::CodeWords::candidates("4711-abacus-zoo"),
            ["zookeeper", "zoologist", "zoology", "zoom"]
        );
        assert_eq!(c.get("4711-abacus-zoo").as_deref(), Some("4711-abacus-zoo"));
        // Too many to list ("a…"): only the bell.
        assert_eq!(c.get("4711-a"), None);
        // The list's hyphenated words complete whole.
        assert_eq!(c.get("4711-t-sh").as_deref(), Some("4711-t-shirt-"));
        assert_eq!(
            c.get("4711-abacus-yo-y").as_deref(),
            Some("4711-abacus-yo-yo-")
        );
        assert_eq!(c.get("47"), None);
        assert_eq!(c.get("4711-"), None);
    }
}
