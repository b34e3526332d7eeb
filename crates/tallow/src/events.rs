//! `--json`: one JSON object per line on stdout, for scripts.
//! `docs/json-events.md` documents every event and field.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turn JSON events on for this process.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether `--json` is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// One event being built; printed by [`Event::emit`] if `--json` is on.
pub struct Event(String);

impl Event {
    pub fn new(name: &str) -> Self {
        let mut s = String::from("{\"event\":");
        push_string(&mut s, name);
        Event(s)
    }

    fn key(&mut self, key: &str) {
        self.0.push(',');
        push_string(&mut self.0, key);
        self.0.push(':');
    }

    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_string(&mut self.0, value);
        self
    }

    pub fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        self.0.push_str(&value.to_string());
        self
    }

    pub fn secs(mut self, key: &str, value: f64) -> Self {
        self.key(key);
        self.0.push_str(&format!("{value:.3}"));
        self
    }

    pub fn strs<'a>(mut self, key: &str, values: impl IntoIterator<Item = &'a str>) -> Self {
        self.key(key);
        self.0.push('[');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            push_string(&mut self.0, v);
        }
        self.0.push(']');
        self
    }

    /// Print the event as one line (if `--json` is on).
    pub fn emit(mut self) {
        if !enabled() {
            return;
        }
        self.0.push('}');
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.0);
        let _ = out.flush();
    }
}

/// Append `s` as a JSON string literal.
fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        push_string(&mut s, "a\"b\\c\nd\u{1b}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u001bé\"");
        let e = Event::new("x")
            .num("n", 3)
            .strs("l", ["a", "b"])
            .str("k", "v");
        assert_eq!(
            e.0,
            "{\"event\":\"x\",\"n\":3,\"l\":[\"a\",\"b\"],\"k\":\"v\""
        );
    }
}
