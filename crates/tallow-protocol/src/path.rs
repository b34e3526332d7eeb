//! Checking relative paths that arrive from a peer.
//!
//! A manifest path is UTF-8, `/`-separated and relative. Anything that could
//! name a file outside the output folder, confuse a terminal, or collide with
//! Tallow's own partial files is rejected before a byte is written. The
//! symlink half of the check (an existing link inside the output folder)
//! happens on disk, in the receive pipeline.
//!
//! Names are compared the way the most forgiving file system would compare
//! them ([`comparison_key`]: Unicode NFC, then lower case), so an offer means
//! the same on ext4 as on APFS, exFAT or casefold ext4: two entries that one
//! of those would store under one name are refused everywhere, and so is a
//! name that such a file system would confuse with Tallow's own files.

use unicode_normalization::UnicodeNormalization;

use crate::limits::MAX_PATH_LEN;

/// Longest single path component, in bytes: 255 (ext4, APFS and NTFS
/// limits) less room for the `.tallow-partial` suffix.
pub const MAX_COMPONENT_LEN: usize = 240;

/// Prefix of Tallow's own files in the output folder (checkpoints); no
/// manifest path may use it, or a peer could plant one.
pub const RESERVED_PREFIX: &str = ".tallow-";

/// Suffix of a file being received; no manifest path may end with it.
pub const PARTIAL_SUFFIX: &str = ".tallow-partial";

/// Why a path from a peer was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Empty path or empty component (`a//b`, trailing `/`).
    #[error("empty path or path component")]
    Empty,
    /// Longer than [`MAX_PATH_LEN`] or a component longer than [`MAX_COMPONENT_LEN`].
    #[error("path is too long")]
    TooLong,
    /// Starts with `/` (or `\`).
    #[error("absolute path")]
    Absolute,
    /// Has a `.` or `..` component.
    #[error("path has a '.' or '..' component")]
    DotComponent,
    /// Has a backslash, which is a separator on Windows.
    #[error("path contains a backslash")]
    Backslash,
    /// Starts with a drive letter such as `C:`.
    #[error("path starts with a drive letter")]
    DriveLetter,
    /// Contains NUL or another control character.
    #[error("path contains a control character")]
    ControlCharacter,
    /// Ends with Tallow's partial-file suffix.
    #[error("path ends with the reserved suffix {PARTIAL_SUFFIX}")]
    ReservedSuffix,
    /// Has a component starting with Tallow's reserved prefix.
    #[error("path has a name starting with the reserved prefix {RESERVED_PREFIX}")]
    ReservedPrefix,
}

/// Check one relative path from a manifest.
pub fn validate_relative_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(PathError::Absolute);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    let b = path.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(PathError::DriveLetter);
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(PathError::Empty);
        }
        if component == "." || component == ".." {
            return Err(PathError::DotComponent);
        }
        if component.len() > MAX_COMPONENT_LEN {
            return Err(PathError::TooLong);
        }
    }
    // `X.TALLOW-PARTIAL` is `x.tallow-partial` on a case-insensitive disk.
    let key = comparison_key(path);
    if key.ends_with(PARTIAL_SUFFIX) {
        return Err(PathError::ReservedSuffix);
    }
    if key.split('/').any(|c| c.starts_with(RESERVED_PREFIX)) {
        return Err(PathError::ReservedPrefix);
    }
    Ok(())
}

/// The form under which a case-insensitive, normalising file system
/// (APFS, exFAT, vfat, casefold ext4) stores a name: NFC, lower-cased, NFC
/// again. Two names with the same key may land on one file there.
pub fn comparison_key(path: &str) -> String {
    path.nfc()
        .collect::<String>()
        .to_lowercase()
        .nfc()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for ok in [
            "a",
            "report.pdf",
            "dir/sub/file.txt",
            "ünïcødé name.txt",
            "..hidden",
            "a..b",
        ] {
            assert_eq!(validate_relative_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn dangerous_names_are_rejected() {
        let cases = [
            ("", PathError::Empty),
            ("a//b", PathError::Empty),
            ("a/", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("\\\\server\\share", PathError::Absolute),
            ("..", PathError::DotComponent),
            ("a/../../b", PathError::DotComponent),
            ("./a", PathError::DotComponent),
            ("a\\..\\b", PathError::Backslash),
            ("C:evil", PathError::DriveLetter),
            ("c:/windows", PathError::DriveLetter),
            ("a\0b", PathError::ControlCharacter),
            ("a\nb", PathError::ControlCharacter),
            ("\u{1b}[31mred", PathError::ControlCharacter),
            ("x.tallow-partial", PathError::ReservedSuffix),
            (".tallow-0123.checkpoint", PathError::ReservedPrefix),
            ("a/.tallow-x", PathError::ReservedPrefix),
            // What a case-insensitive disk would take for Tallow's own files.
            (".TALLOW-0123.checkpoint", PathError::ReservedPrefix),
            ("a/.Tallow-x", PathError::ReservedPrefix),
            ("x.Tallow-Partial", PathError::ReservedSuffix),
        ];
        for (path, want) in cases {
            assert_eq!(validate_relative_path(path), Err(want), "{path:?}");
        }
        assert_eq!(
            validate_relative_path(&"a".repeat(MAX_COMPONENT_LEN + 1)),
            Err(PathError::TooLong)
        );
        assert_eq!(
            validate_relative_path(&"a".repeat(MAX_COMPONENT_LEN)),
            Ok(())
        );
        assert_eq!(
            validate_relative_path(&"a/".repeat(MAX_PATH_LEN)),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn comparison_keys_fold_case_and_normalisation() {
        assert_eq!(comparison_key("README.md"), comparison_key("readme.MD"));
        // "é" precomposed and as "e" + combining acute accent.
        assert_eq!(comparison_key("caf\u{e9}"), comparison_key("cafe\u{301}"));
        assert_eq!(comparison_key("CAFE\u{301}"), comparison_key("caf\u{e9}"));
        assert_ne!(comparison_key("a"), comparison_key("b"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::path::{Component, Path};

        /// Whatever the sanitiser accepts, joined under a base folder, only
        /// ever names something strictly inside it.
        fn stays_inside(path: &str) -> bool {
            let joined = Path::new("/base/out").join(path);
            let mut depth = 0i32;
            for c in joined.components().skip(3) {
                match c {
                    Component::Normal(_) => depth += 1,
                    _ => return false,
                }
            }
            depth >= 1 && joined.starts_with("/base/out")
        }

        proptest! {
            #[test]
            fn accepted_arbitrary_strings_stay_inside(s in "\\PC{0,40}") {
                if validate_relative_path(&s).is_ok() {
                    prop_assert!(stays_inside(&s), "{:?}", s);
                }
            }

            #[test]
            fn accepted_hostile_looking_paths_stay_inside(
                parts in proptest::collection::vec("(\\.|\\.\\.|/|\\\\|[a-zC]:|\\x00|\\x1b|\\n|[a-z ]{1,3}){1,4}", 1..6)
            ) {
                let s = parts.join("/");
                if validate_relative_path(&s).is_ok() {
                    prop_assert!(stays_inside(&s), "{:?}", s);
                    prop_assert!(!s.chars().any(char::is_control));
                    prop_assert!(!s.contains('\\'));
                }
            }

            #[test]
            fn plain_names_are_accepted(parts in proptest::collection::vec("[a-zA-Z0-9 _é-]{1,20}", 1..5)) {
                let s = parts.join("/");
                prop_assume!(!s.split('/').any(|c| c == "." || c == ".."));
                prop_assert_eq!(validate_relative_path(&s), Ok(()));
            }
        }
    }
}
