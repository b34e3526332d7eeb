//! The README's install steps, run as a newcomer would run them (issue
//! 18.12): the block under "## Install", with the binary under test as the
//! installed `tallow` and a fresh home folder. `.ci/run` runs the `cargo
//! install` line itself.

use std::fs;
use std::path::Path;
use std::process::Command;

use tallow_testkit::process::binary;

/// The shell lines of the first code block after "## Install".
fn install_block() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = fs::read_to_string(readme).unwrap();
    let section = &text[text.find("\n## Install\n").expect("an Install section")..];
    let quick_start = section
        .find("\n## Quick start")
        .expect("Quick start after Install");
    let block = section[..quick_start]
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in the Install section");
    block.lines().map(str::to_owned).collect()
}

#[test]
fn the_readme_install_steps_work_on_a_fresh_account() {
    let lines = install_block();
    let install = lines
        .iter()
        .find(|l| l.starts_with("cargo install"))
        .expect("a cargo install line");
    // It builds this crate, whose binary is the one tested here.
    assert!(
        install.contains("--path crates/tallow "),
        "the install line names another crate: {install}"
    );
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(manifest.contains("[[bin]]\nname = \"tallow\""));

    // The rest runs in a fresh home, with `tallow` where cargo puts it.
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join(".cargo/bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(binary(), bin.join("tallow")).unwrap();
    let script: Vec<&str> = lines
        .iter()
        .filter(|l| !l.starts_with("cargo install"))
        .map(String::as_str)
        .collect();
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script.join("\n"))
        .env("HOME", home.path())
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the install steps failed: {said}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tallow "));
    let man = home.path().join(".local/share/man/man1");
    for page in [
        "tallow.1",
        "tallow-send.1",
        "tallow-receive.1",
        "tallow-relay.1",
    ] {
        assert!(man.join(page).is_file(), "no {page} in {}", man.display());
    }
    let completion = home
        .path()
        .join(".local/share/bash-completion/completions/tallow");
    let script = fs::read_to_string(&completion).unwrap();
    assert!(script.contains("complete -F"), "{script}");
}
