//! Bounded big-endian reading and writing: the one codec for every byte
//! layout Tallow defines.
//!
//! Every type with a wire form implements [`Encode`] (append to a `Vec`) and
//! [`Decode`] (read from a [`WireReader`]): the peer messages, the manifest,
//! the relay's hello and status, the LAN announcement and the checkpoint's
//! records. Decoding never trusts a length: [`WireReader`] checks each one
//! against the bytes actually present (and the caller's own limit) before
//! slicing or allocating; [`Decode::decode_all`] refuses trailing bytes.
//! Where a frame header goes in front of a message is decided in one place,
//! `Message::encode_frame`.

/// Why bytes from a peer or relay could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ended before a field it declares.
    #[error("message truncated: {0} is incomplete")]
    Truncated(&'static str),
    /// Bytes left over after the last field.
    #[error("message has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A length or count beyond the protocol's limit.
    #[error("{what} is {got}, above the limit of {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The declared value.
        got: u64,
        /// The limit.
        max: u64,
    },
    /// A message type this version does not know.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field holds an impossible value.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Reads fields from a borrowed buffer, never past its end.
pub struct WireReader<'a> {
    buf: &'a [u8],
}

impl<'a> WireReader<'a> {
    /// Read from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        WireReader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// Big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// Big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A u16-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u16(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLarge {
                what,
                got: len as u64,
                max: max as u64,
            });
        }
        std::str::from_utf8(self.bytes(len, what)?).map_err(|_| DecodeError::Invalid(what))
    }

    /// The rest of the buffer.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fail if anything is left.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

/// A value with a wire form.
pub trait Encode {
    /// Append the wire form to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The wire form in a new buffer.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A value read back from its wire form (borrowing from the buffer where it
/// can), every length bounded before use.
pub trait Decode<'a>: Sized {
    /// Why it could not be read.
    type Error: From<DecodeError>;

    /// Read one value from `r`, leaving what follows it.
    fn decode(r: &mut WireReader<'a>) -> Result<Self, Self::Error>;

    /// Read exactly one value from the whole of `buf`: bytes left over are
    /// an error.
    fn decode_all(buf: &'a [u8]) -> Result<Self, Self::Error> {
        let mut r = WireReader::new(buf);
        let value = Self::decode(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

/// Appends big-endian fields to a buffer, mirroring [`WireReader`].
pub trait WireWrite {
    /// One byte.
    fn put_u8(&mut self, v: u8);
    /// Big-endian u16.
    fn put_u16(&mut self, v: u16);
    /// Big-endian u32.
    fn put_u32(&mut self, v: u32);
    /// Big-endian u64.
    fn put_u64(&mut self, v: u64);
    /// Raw bytes (a fixed-size field).
    fn put_bytes(&mut self, v: &[u8]);
    /// Append a big-endian u16-length-prefixed string, cut at `max` bytes on a
    /// character boundary (strings written are our own: names and messages;
    /// paths are checked against the same limit before they are offered).
    fn put_string(&mut self, s: &str, max: usize);
}

impl WireWrite for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }

    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }

    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }

    fn put_bytes(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }

    fn put_string(&mut self, s: &str, max: usize) {
        let end = floor_char_boundary(s, max.min(u16::MAX as usize));
        self.put_u16(end as u16);
        self.put_bytes(&s.as_bytes()[..end]);
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary, as a length.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = WireReader::new(&[0, 5, b'a']);
        assert_eq!(r.string(100, "name"), Err(DecodeError::Truncated("name")));
        let mut r = WireReader::new(&[0, 3, b'a', b'b', b'c', 9]);
        assert_eq!(
            r.string(2, "name"),
            Err(DecodeError::TooLarge {
                what: "name",
                got: 3,
                max: 2
            })
        );
        let mut r = WireReader::new(&[0, 3, b'a', b'b', b'c', 9]);
        assert_eq!(r.string(3, "name"), Ok("abc"));
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn put_string_cuts_on_a_char_boundary() {
        let mut v = Vec::new();
        v.put_string("héllo", 2);
        assert_eq!(v, [0, 1, b'h']);
        let mut r = WireReader::new(&v);
        assert_eq!(r.string(10, "s"), Ok("h"));
    }
}
