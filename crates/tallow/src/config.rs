//! `tallow config`: defaults kept in the platform's config folder
//! (`~/.config/tallow/config` on Linux, via the `directories` crate).
//!
//! The file holds `key = value` lines (`#` starts a comment). Keys: `relay`,
//! `out`, `compress`. A value given on the command line wins over the
//! environment (`TALLOW_RELAY`, `TALLOW_OUT`, `TALLOW_COMPRESS`), which wins
//! over the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

/// Keys the file may hold, with what each sets.
pub const KEYS: [(&str, &str); 3] = [
    (
        "relay",
        "relay HOST:PORT used when --relay and TALLOW_RELAY are not given",
    ),
    (
        "out",
        "folder `tallow receive` writes into when --out and TALLOW_OUT are not given",
    ),
    (
        "compress",
        "auto, zstd or none, when --compress and TALLOW_COMPRESS are not given",
    ),
];

#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: Option<ConfigAction>,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Show every setting and the file's path (the default).
    Show,
    /// Set a default.
    Set {
        /// relay, out or compress.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove a default.
    Unset {
        /// relay, out or compress.
        key: String,
    },
    /// Print the config file's path.
    Path,
}

/// Where the file lives.
pub fn path() -> anyhow::Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "tallow")
        .context("cannot find a home folder for the config file (is HOME set?)")?;
    Ok(dirs.config_dir().join("config"))
}

/// The settings in the file (empty if there is none).
pub fn load() -> anyhow::Result<BTreeMap<String, String>> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut map = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').with_context(|| {
            format!(
                "{} line {}: expected `key = value`; fix or remove it",
                path.display(),
                n + 1
            )
        })?;
        map.insert(
            key.trim().to_owned(),
            value.trim().trim_matches('"').to_owned(),
        );
    }
    Ok(map)
}

/// A setting from the file, if set.
pub fn get(key: &str) -> anyhow::Result<Option<String>> {
    Ok(load()?.remove(key))
}

fn save(map: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let path = path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = String::from("# tallow defaults: `tallow config set KEY VALUE`\n");
    for (k, v) in map {
        text.push_str(&format!("{k} = {v}\n"));
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn check_key(key: &str) -> anyhow::Result<()> {
    if KEYS.iter().any(|(k, _)| *k == key) {
        return Ok(());
    }
    let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    Err(crate::exit::UsageError::new(format!(
        "{key:?} is not a config key: use {}",
        known.join(", ")
    ))
    .into())
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    match args.action.unwrap_or(ConfigAction::Show) {
        ConfigAction::Show => {
            let map = load()?;
            out!("# {}", path()?.display());
            for (key, what) in KEYS {
                match map.get(key) {
                    Some(v) => out!("{key} = {v}"),
                    None => out!("# {key}: not set ({what})"),
                }
            }
        }
        ConfigAction::Set { key, value } => {
            check_key(&key)?;
            if key == "compress" && !["auto", "zstd", "none"].contains(&value.as_str()) {
                return Err(
                    crate::exit::UsageError::new("compress must be auto, zstd or none").into(),
                );
            }
            if key == "relay" && !value.split(',').all(is_host_port) {
                return Err(crate::exit::UsageError::new(
                    "relay must be HOST:PORT (e.g. relay.example.org:9009), or several separated by commas",
                )
                .into());
            }
            let mut map = load()?;
            map.insert(key.clone(), value.clone());
            save(&map)?;
            say!("Set {key} = {value} in {}.", path()?.display());
            // Kept (it may be a disk not mounted yet), but said.
            if key == "out" && !std::path::Path::new(&value).is_dir() {
                say!("warning: there is no folder {value} yet; tallow receive will create it");
            }
        }
        ConfigAction::Unset { key } => {
            check_key(&key)?;
            let mut map = load()?;
            let had = map.remove(&key).is_some();
            save(&map)?;
            if had {
                say!("Removed {key} from {}.", path()?.display());
            } else {
                say!("{key} was not set in {}.", path()?.display());
            }
        }
        ConfigAction::Path => out!("{}", path()?.display()),
    }
    Ok(())
}

/// `host:port` with a host and a port number: a name of letters, digits,
/// dots and hyphens, an IPv4 address, or an IPv6 address in brackets
/// (`[::1]:9009`; a bare `::1` or `a:1:2` is not one).
pub fn is_host_port(entry: &str) -> bool {
    let entry = entry.trim();
    let Some((host, port)) = entry.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                && !host.starts_with(['-', '.'])
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::is_host_port;

    #[test]
    fn relay_addresses_are_host_and_port() {
        for good in [
            "relay.example.org:9009",
            "127.0.0.1:9009",
            "[::1]:9009",
            "[2001:db8::1]:443",
            " my-relay:1 ",
        ] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in [
            "::1",
            "a:1:2",
            "relay.example.org",
            "relay:0",
            "relay:99999",
            ":9009",
            "[::1:9009",
            "[nonsense]:9009",
            "bad host:9009",
            "-relay:9009",
            "relay:port",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
