//! What to do about an error. The libraries say what happened; which flag
//! or variable would help is the command line's to name, so it is added
//! here, after the library's sentence.

use tallow_net::NetError;
use tallow_transfer::TransferError;

/// What to do after a transfer was cut short.
const RESUME: &str = "what arrived is kept: run the same `tallow send` again (a new code is fine) and `tallow receive` with its code to resume";

/// The advice for `e`, if the command line has some. With a relay given
/// (`relay_given`), a failure on the local network gets no advice to name
/// one: the relay's own outcome is what the user needs, and it was tried.
pub fn for_error(e: &anyhow::Error, relay_given: bool) -> Option<&'static str> {
    if let Some(e) = e.downcast_ref::<TransferError>() {
        return match e {
            TransferError::NoSpace { .. } => Some("free some space or choose another folder with --out"),
            TransferError::DestinationExists { .. } => Some(
                "pass --overwrite to replace it, --skip-existing to keep it (and not receive it), or choose another folder with --out",
            ),
            // A transfer cut short: what arrived is kept and resumes.
            TransferError::Transport(_)
            | TransferError::PeerAborted {
                kind: tallow_protocol::message::AbortKind::Cancelled,
                ..
            } => Some(RESUME),
            _ => None,
        };
    }
    match e.downcast_ref::<NetError>()? {
        e if relay_given && e.on_local_network() => None,
        NetError::NoRoute => Some("pass --relay HOST:PORT (or set TALLOW_RELAY), or drop --no-lan"),
        NetError::HostRelay { .. } => Some("pass --relay to use a relay instead"),
        NetError::Discovery { .. } => Some("set TALLOW_DISCOVERY_PORT or pass --relay"),
        NetError::NotOnLan { .. } | NetError::LanPairingTimeout { .. } => Some(
            "a machine on another network is reached through a relay both sides name with --relay",
        ),
        NetError::LanUnreachable { .. } => {
            Some("with --relay HOST:PORT on both sides the transfer goes through a relay instead")
        }
        _ => None,
    }
}

/// `message` and then `advice`: after a clause, as a clause; after a
/// question, as a sentence of its own ("…with this code? A machine on…",
/// not "…with this code?; a machine…").
pub fn append(message: &str, advice: &str) -> String {
    if message.ends_with('?') {
        let mut chars = advice.chars();
        let capital: String = chars
            .next()
            .into_iter()
            .flat_map(char::to_uppercase)
            .collect();
        format!("{message} {capital}{}.", chars.as_str())
    } else {
        format!("{message}; {advice}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_after_a_question_is_a_sentence_of_its_own() {
        assert_eq!(
            append("is the sender running, with this code?", "a relay helps"),
            "is the sender running, with this code? A relay helps."
        );
        assert_eq!(append("it failed", "try again"), "it failed; try again");
    }

    #[test]
    fn advice_names_the_flags_that_help() {
        let exists = anyhow::Error::new(TransferError::DestinationExists {
            path: "a.txt".into(),
        });
        assert!(for_error(&exists, false).is_some_and(|a| a.contains("--overwrite")));
        let lan = anyhow::Error::new(NetError::NotOnLan {
            waited: std::time::Duration::from_secs(2),
        });
        assert!(for_error(&lan, false).is_some_and(|a| a.contains("--relay")));
        // Issue 18.9: no "pass --relay" to someone who did.
        assert_eq!(for_error(&lan, true), None);
        assert_eq!(for_error(&anyhow::anyhow!("something else"), false), None);
    }
}
