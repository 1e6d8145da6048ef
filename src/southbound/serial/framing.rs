//! Cuts the byte stream of a serial port into frames: by delimiter, by fixed
//! length, or by a pause on the line (idle). Pure: no I/O, no clock (the
//! caller tells it when the line has been idle).
//!
//! Owns the memory bound: the buffer never holds more than `max_frame`
//! bytes plus one read. A stream without a delimiter (garbage, wrong baud
//! rate) is discarded in bounded chunks and counted in [`FrameStats`]; the
//! rest of such an oversized frame, up to the next delimiter, is discarded
//! too. Must not decode frames.

/// How frames are delimited (`frame:` of a serial device, resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameMode {
    /// A frame ends with these bytes (not part of the frame). Empty frames
    /// (two delimiters in a row) are skipped.
    Delimiter(Vec<u8>),
    /// Every frame is exactly this many bytes.
    Length(usize),
    /// A frame ends when the line is quiet; the caller calls [`Framer::idle`].
    Idle,
}

/// What the framer threw away, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames handed out.
    pub frames: u64,
    /// Frames longer than `max_frame` (discarded).
    pub oversized: u64,
    /// Bytes discarded with oversized frames.
    pub discarded_bytes: u64,
}

/// A stateful framer for one port connection.
#[derive(Debug)]
pub struct Framer {
    mode: FrameMode,
    max_frame: usize,
    buf: Vec<u8>,
    /// Delimiter mode: where the next search starts (earlier bytes hold no
    /// delimiter).
    scan: usize,
    /// Inside an oversized frame: drop bytes until the frame ends.
    discarding: bool,
    stats: FrameStats,
}

impl Framer {
    /// `max_frame` is at least 1 (and at least the length in length mode;
    /// config validation checks both).
    pub fn new(mode: FrameMode, max_frame: usize) -> Framer {
        let max_frame = match mode {
            FrameMode::Length(n) => max_frame.max(n),
            _ => max_frame.max(1),
        };
        Framer {
            mode,
            max_frame,
            buf: Vec::new(),
            scan: 0,
            discarding: false,
            stats: FrameStats::default(),
        }
    }

    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// Bytes waiting for the rest of their frame.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Forgets a partial frame (the port closed).
    #[cfg(test)]
    pub fn reset(&mut self) {
        self.buf.clear();
        self.scan = 0;
        self.discarding = false;
    }

    /// Adds received bytes; complete frames are appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) {
        match &self.mode {
            FrameMode::Delimiter(d) => {
                let d = d.clone();
                self.push_delimited(data, &d, out)
            }
            FrameMode::Length(n) => {
                let n = *n;
                self.buf.extend_from_slice(data);
                let mut start = 0;
                while self.buf.len() - start >= n {
                    out.push(self.buf[start..start + n].to_vec());
                    self.stats.frames += 1;
                    start += n;
                }
                self.buf.drain(..start);
            }
            FrameMode::Idle => {
                if self.discarding {
                    self.stats.discarded_bytes += data.len() as u64;
                    return;
                }
                self.buf.extend_from_slice(data);
                if self.buf.len() > self.max_frame {
                    self.stats.oversized += 1;
                    self.stats.discarded_bytes += self.buf.len() as u64;
                    self.buf.clear();
                    self.discarding = true;
                }
            }
        }
    }

    /// The line has been quiet for the idle time: in idle mode, what was
    /// received is a frame. In length mode, a partial frame is discarded
    /// (counted in `discarded_bytes`), so that a lost byte does not shift
    /// every later frame. Delimiter mode ignores it.
    pub fn idle(&mut self) -> Option<Vec<u8>> {
        match self.mode {
            FrameMode::Idle => {}
            FrameMode::Length(_) => {
                self.stats.discarded_bytes += self.buf.len() as u64;
                self.buf.clear();
                return None;
            }
            FrameMode::Delimiter(_) => return None,
        }
        self.discarding = false;
        if self.buf.is_empty() {
            return None;
        }
        self.stats.frames += 1;
        Some(std::mem::take(&mut self.buf))
    }

    fn push_delimited(&mut self, data: &[u8], delim: &[u8], out: &mut Vec<Vec<u8>>) {
        self.buf.extend_from_slice(data);
        let dlen = delim.len();
        let mut start = 0;
        loop {
            let from = self.scan.max(start);
            match find(&self.buf[from..], delim) {
                Some(i) => {
                    let end = from + i;
                    let len = end - start;
                    if self.discarding {
                        self.stats.discarded_bytes += (len + dlen) as u64;
                        self.discarding = false;
                    } else if len > self.max_frame {
                        self.stats.oversized += 1;
                        self.stats.discarded_bytes += (len + dlen) as u64;
                    } else if len > 0 {
                        out.push(self.buf[start..end].to_vec());
                        self.stats.frames += 1;
                    }
                    start = end + dlen;
                    self.scan = start;
                }
                None => break,
            }
        }
        self.buf.drain(..start);
        // Keep the bytes that may begin a delimiter; everything before them
        // belongs to a frame that has no end yet.
        let keep = dlen - 1;
        if self.buf.len() > self.max_frame + keep {
            let drop = self.buf.len() - keep;
            if !self.discarding {
                self.stats.oversized += 1;
                self.discarding = true;
            }
            self.stats.discarded_bytes += drop as u64;
            self.buf.drain(..drop);
        }
        self.scan = self.buf.len().saturating_sub(keep);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return hay.iter().position(|b| *b == needle[0]);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Turns `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` written literally (as in a
/// single-quoted YAML string) into their bytes; other text is kept as is.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4).ok_or("`\\x` needs two hex digits")?;
                let v = u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("`\\x{hex}` is not a hex byte"))?;
                out.push(v);
                i += 4;
                continue;
            }
            Some(other) => {
                return Err(format!(
                    "unknown escape `\\{}` (use \\r \\n \\t \\0 \\\\ \\xHH)",
                    *other as char
                ));
            }
            None => return Err("a lone `\\` at the end".into()),
        }
        i += 2;
    }
    Ok(out)
}

/// A frame for a log line: printable ASCII as is, other bytes escaped,
/// cut after `max` input bytes.
pub fn escape_for_log(frame: &[u8], max: usize) -> String {
    let mut s: String = frame
        .iter()
        .take(max)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if frame.len() > max {
        s.push_str(&format!("... ({} bytes)", frame.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: &mut Framer, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        out
    }

    #[test]
    fn delimiter_split_across_reads() {
        let mut f = Framer::new(FrameMode::Delimiter(b"\r\n".to_vec()), 64);
        let out = run(
            &mut f,
            &[b"temp=2", b"1.5\r", b"\nhum=40\r\n\r\nx", b"y\r\n"],
        );
        assert_eq!(
            out,
            vec![b"temp=21.5".to_vec(), b"hum=40".to_vec(), b"xy".to_vec()]
        );
        assert_eq!(f.stats().frames, 3);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn delimiter_garbage_is_discarded_in_bounded_chunks() {
        let mut f = Framer::new(FrameMode::Delimiter(b"\n".to_vec()), 16);
        let mut out = Vec::new();
        for _ in 0..1000 {
            f.push(&[0xA5; 100], &mut out);
            assert!(f.buffered() <= 16, "buffer grew to {}", f.buffered());
        }
        assert!(out.is_empty());
        // The tail of the garbage ends at the next delimiter; then frames resume.
        f.push(b"tail\nok=1\n", &mut out);
        assert_eq!(out, vec![b"ok=1".to_vec()]);
        let st = f.stats();
        assert_eq!(st.oversized, 1);
        assert_eq!(st.discarded_bytes, 100_000 + 5);
    }

    #[test]
    fn delimiter_oversized_complete_frame_is_dropped() {
        let mut f = Framer::new(FrameMode::Delimiter(b"\n".to_vec()), 4);
        let out = run(&mut f, &[b"12345\nabcd\n"]);
        assert_eq!(out, vec![b"abcd".to_vec()]);
        assert_eq!(f.stats().oversized, 1);
        assert_eq!(f.stats().discarded_bytes, 6);
    }

    #[test]
    fn delimiter_multi_byte_split_at_limit_is_found() {
        let mut f = Framer::new(FrameMode::Delimiter(b"\r\n".to_vec()), 4);
        let out = run(&mut f, &[b"abcd\r", b"\n"]);
        assert_eq!(out, vec![b"abcd".to_vec()]);
        assert_eq!(f.stats().oversized, 0);
    }

    #[test]
    fn length_frames() {
        let mut f = Framer::new(FrameMode::Length(4), 4);
        let out = run(&mut f, &[b"ab", b"cdefg", b"h12"]);
        assert_eq!(out, vec![b"abcd".to_vec(), b"efgh".to_vec()]);
        assert_eq!(f.buffered(), 2);
        f.reset();
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn length_frames_realign_after_a_pause() {
        let mut f = Framer::new(FrameMode::Length(4), 4);
        let out = run(&mut f, &[b"xyz"]);
        assert!(out.is_empty());
        assert_eq!(f.idle(), None);
        assert_eq!(f.stats().discarded_bytes, 3);
        let out = run(&mut f, &[b"abcd"]);
        assert_eq!(out, vec![b"abcd".to_vec()]);
    }

    #[test]
    fn idle_frames_and_oversized() {
        let mut f = Framer::new(FrameMode::Idle, 8);
        let out = run(&mut f, &[b"abc", b"def"]);
        assert!(out.is_empty());
        assert_eq!(f.idle(), Some(b"abcdef".to_vec()));
        assert_eq!(f.idle(), None);
        run(&mut f, &[b"0123456789", b"more"]);
        assert!(f.buffered() <= 8);
        assert_eq!(f.idle(), None, "an oversized frame is not handed out");
        run(&mut f, &[b"ok"]);
        assert_eq!(f.idle(), Some(b"ok".to_vec()));
        assert_eq!(f.stats().oversized, 1);
        assert_eq!(f.stats().discarded_bytes, 14);
    }

    #[test]
    fn unescape_forms() {
        assert_eq!(unescape(r"R\r").unwrap(), b"R\r");
        assert_eq!(unescape("\r\n").unwrap(), b"\r\n");
        assert_eq!(unescape(r"\x02a\\").unwrap(), b"\x02a\\");
        assert!(unescape(r"\q").is_err());
        assert!(unescape(r"\x4").is_err());
    }

    #[test]
    fn escape_truncates() {
        assert_eq!(escape_for_log(b"a\r\n\xff", 10), "a\\r\\n\\xff");
        assert_eq!(escape_for_log(b"abcdef", 3), "abc... (6 bytes)");
    }
}
