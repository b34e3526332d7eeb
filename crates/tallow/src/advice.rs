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
        NetError::HostRelay { .. }
        | NetError::Discovery { .. }
        | NetError::NotOnLan { .. }
        | NetError::LanPairingTimeout { .. }
        | NetError::LanUnreachable { .. }
            if relay_given =>
        {
            None
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
