//! The chunked transfer coding (RFC 9112 §7.1), decoded out of a read buffer without copying
//! the data.

use bytes::{Bytes, BytesMut};

use super::CodecError;

/// How long a chunk-size line (with extensions) or a trailer line may be.
pub(super) const MAX_CHUNK_LINE: usize = 4096;

/// Chunk extensions, over a whole body, and the trailer section may not be larger than this
/// (hyper allows 16 KiB of each; nothing real comes close).
const MAX_EXTENSION_BYTES: usize = 8 * 1024;
const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// Takes up to `remaining` bytes of a length-delimited body (or chunk) out of `buf` without
/// copying them, and counts them off.
pub fn take_counted(buf: &mut BytesMut, remaining: &mut u64) -> Bytes {
    let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(buf.len());
    *remaining -= take as u64;
    buf.split_to(take).freeze()
}

/// What the chunked decoder got out of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer ends mid-way: read more.
    NeedMore,
    /// The last chunk and the trailers are through; the body is complete.
    Done,
}

/// Decodes chunked coding out of a read buffer, handing the data out without copying it.
/// Chunk extensions and trailer fields are read and dropped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes of chunk extensions and of trailer lines so far.
    extension_bytes: usize,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// This many bytes of chunk data to go.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines, until an empty one.
    Trailers,
    Done,
}

impl ChunkedDecoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, CodecError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some((used, size, extensions)) = size_line(buf)? else {
                        return match buf.len() < MAX_CHUNK_LINE {
                            true => Ok(Decoded::NeedMore),
                            false => Err(CodecError::Chunked),
                        };
                    };
                    self.extension_bytes += extensions;
                    if self.extension_bytes > MAX_EXTENSION_BYTES {
                        return Err(CodecError::Chunked);
                    }
                    let _ = buf.split_to(used);
                    self.state = match size {
                        0 => ChunkState::Trailers,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let mut left = remaining;
                    let data = take_counted(buf, &mut left);
                    self.state = match left {
                        0 => ChunkState::DataEnd,
                        n => ChunkState::Data(n),
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(CodecError::Chunked);
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(CodecError::Chunked);
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(used) = trailer_line(buf)? else {
                        return match buf.len() < MAX_CHUNK_LINE {
                            true => Ok(Decoded::NeedMore),
                            false => Err(CodecError::Chunked),
                        };
                    };
                    self.trailer_bytes += used;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(CodecError::Chunked);
                    }
                    let _ = buf.split_to(used);
                    if used == 2 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// `tchar` (RFC 9110 §5.6.2): what field names, methods and chunk-extension names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a field value or quoted-string: visible ASCII, space, tab, or obs-text.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..0x7f).contains(&b) || b >= 0x80
}

/// Where a scan of a line stands.
enum Scan {
    /// The bytes so far are a valid beginning: read more.
    Short,
    /// Not the grammar.
    Invalid,
}

/// Parses a chunk-size line at the start of `buf` (RFC 9112 §7.1):
///
/// ```text
/// chunk-size CRLF | chunk-size chunk-ext CRLF
/// chunk-size = 1*HEXDIG
/// chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-val = token / quoted-string
/// ```
///
/// `Some((bytes used, size, bytes of extensions))` when complete, `None` when the line is a
/// valid beginning that needs more bytes. Sizes beyond 2^60 are refused (no body is that large,
/// and the sum cannot overflow); a bare LF does not end the line.
fn size_line(buf: &[u8]) -> Result<Option<(usize, u64, usize)>, CodecError> {
    match scan_size_line(buf) {
        Ok(done) => Ok(Some(done)),
        Err(Scan::Short) => Ok(None),
        Err(Scan::Invalid) => Err(CodecError::Chunked),
    }
}

fn scan_size_line(buf: &[u8]) -> Result<(usize, u64, usize), Scan> {
    let at = |i: usize| buf.get(i).copied().ok_or(Scan::Short);
    let mut i = 0;
    let mut size: u64 = 0;
    while let Some(digit) = buf.get(i).and_then(|b| (*b as char).to_digit(16)) {
        if i == 15 {
            return Err(Scan::Invalid);
        }
        size = size * 16 + u64::from(digit);
        i += 1;
    }
    if i == 0 {
        // No hex digit: this is no chunk-size, unless there is nothing to look at yet.
        return match buf.is_empty() {
            true => Err(Scan::Short),
            false => Err(Scan::Invalid),
        };
    }
    let extensions_start = i;
    let skip_bws = |i: &mut usize| -> Result<(), Scan> {
        while matches!(at(*i)?, b' ' | b'\t') {
            *i += 1;
        }
        Ok(())
    };
    loop {
        let before_bws = i;
        skip_bws(&mut i)?;
        match at(i)? {
            b'\r' if i == before_bws => {
                return match at(i + 1)? {
                    b'\n' => Ok((i + 2, size, i - extensions_start)),
                    _ => Err(Scan::Invalid),
                };
            }
            b';' => {
                i += 1;
                skip_bws(&mut i)?;
                let name = i;
                while is_tchar(at(i)?) {
                    i += 1;
                }
                if i == name {
                    return Err(Scan::Invalid);
                }
                let after_name = i;
                skip_bws(&mut i)?;
                if at(i)? != b'=' {
                    // No value: whatever follows is checked by the next round.
                    i = after_name;
                    continue;
                }
                i += 1;
                skip_bws(&mut i)?;
                if at(i)? == b'"' {
                    i += 1;
                    loop {
                        match at(i)? {
                            b'"' => {
                                i += 1;
                                break;
                            }
                            b'\\' if is_value_byte(at(i + 1)?) => i += 2,
                            b'\\' => return Err(Scan::Invalid),
                            b if is_value_byte(b) => i += 1,
                            _ => return Err(Scan::Invalid),
                        }
                    }
                } else {
                    let value = i;
                    while is_tchar(at(i)?) {
                        i += 1;
                    }
                    if i == value {
                        return Err(Scan::Invalid);
                    }
                }
            }
            _ => return Err(Scan::Invalid),
        }
    }
}

/// Parses one line of the trailer section (RFC 9112 §7.1.2): the empty line that ends it, or a
/// `field-name ":" OWS field-value OWS` line. The number of bytes used when complete.
fn trailer_line(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    let at = |i: usize| buf.get(i).copied();
    let mut i = 0;
    while at(i).is_some_and(is_tchar) {
        i += 1;
    }
    if i == 0 {
        return match (at(0), at(1)) {
            (None, _) | (Some(b'\r'), None) => Ok(None),
            (Some(b'\r'), Some(b'\n')) => Ok(Some(2)),
            _ => Err(CodecError::Chunked),
        };
    }
    match at(i) {
        None => return Ok(None),
        Some(b':') => i += 1,
        Some(_) => return Err(CodecError::Chunked),
    }
    loop {
        match at(i) {
            None => return Ok(None),
            Some(b'\r') => {
                return match at(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(_) => Err(CodecError::Chunked),
                };
            }
            Some(b) if is_value_byte(b) => i += 1,
            Some(_) => return Err(CodecError::Chunked),
        }
    }
}
