//! The two Sparkplug counters: `seq` (0-255, one per message after NBIRTH,
//! which is 0) and `bdSeq` (0-255, one per MQTT session of the node, the
//! same in NBIRTH and the NDEATH of that session), the latter kept in
//! `{data_dir}/sparkplug.bdseq` so it is right after a restart or a
//! SIGKILL.
//!
//! Owns [`Seq`], [`BdSeq`] and that file. Must not know topics or payloads.

use std::io::Write;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::SparkplugError;

/// The file under `data_dir` that holds the last bdSeq used.
pub const BD_SEQ_FILE: &str = "sparkplug.bdseq";

/// The message sequence number: NBIRTH is 0, every later message of the
/// node (DBIRTH, DDATA, DDEATH) the next, wrapping after 255.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seq(u8);

impl Seq {
    /// Starts again at 0 and returns it (for NBIRTH).
    pub fn birth(&mut self) -> u64 {
        self.0 = 0;
        0
    }

    /// The next number (after 255 comes 0).
    pub fn advance(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        u64::from(self.0)
    }
}

/// The birth-death sequence number, persisted.
#[derive(Debug)]
pub struct BdSeq {
    file: PathBuf,
    current: u8,
}

impl BdSeq {
    /// Reads the last bdSeq used from `data_dir` and takes the next one for
    /// this session (0 when there is none; a file that does not hold a
    /// number is set aside and logged). The new value is on disk before
    /// this returns, so a SIGKILL before the NBIRTH cannot reuse it.
    pub fn open(data_dir: &Path) -> Result<BdSeq, SparkplugError> {
        let file = data_dir.join(BD_SEQ_FILE);
        std::fs::create_dir_all(data_dir).map_err(|source| SparkplugError::BdSeq {
            file: file.clone(),
            source,
        })?;
        let last = match std::fs::read_to_string(&file) {
            Ok(text) => match text.trim().parse::<u8>() {
                Ok(n) => Some(n),
                Err(_) => {
                    match crate::data_dir::set_aside(&file) {
                        Ok(to) => {
                            warn!(file = %file.display(), set_aside = %to.display(), "bdSeq file is not a number 0-255; starting at 0")
                        }
                        Err((f, e)) => {
                            warn!(file = %f.display(), error = %e, "bdSeq file is not a number and could not be set aside")
                        }
                    }
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(SparkplugError::BdSeq { file, source }),
        };
        let mut b = BdSeq { file, current: 0 };
        match last {
            Some(n) => b.advance_to(n.wrapping_add(1))?,
            None => b.advance_to(0)?,
        }
        Ok(b)
    }

    /// The bdSeq of this session.
    pub fn current(&self) -> u64 {
        u64::from(self.current)
    }

    /// A new session (a reconnect, or the node's births after the host
    /// came back): the next bdSeq, on disk before it is used.
    pub fn advance(&mut self) -> Result<u64, SparkplugError> {
        self.advance_to(self.current.wrapping_add(1))?;
        Ok(self.current())
    }

    fn advance_to(&mut self, n: u8) -> Result<(), SparkplugError> {
        let tmp = self.file.with_extension("bdseq.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{n}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.file)
        };
        write().map_err(|source| SparkplugError::BdSeq {
            file: self.file.clone(),
            source,
        })?;
        self.current = n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_wraps_after_255_and_births_start_at_0() {
        let mut s = Seq::default();
        assert_eq!(s.birth(), 0);
        let all: Vec<u64> = (0..256).map(|_| s.advance()).collect();
        assert_eq!(all[0], 1);
        assert_eq!(all[254], 255);
        assert_eq!(all[255], 0);
        assert_eq!(s.birth(), 0);
    }

    #[test]
    fn bd_seq_goes_on_across_opens_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(BdSeq::open(dir.path()).unwrap().current(), 0);
        let mut b = BdSeq::open(dir.path()).unwrap();
        assert_eq!(b.current(), 1);
        assert_eq!(b.advance().unwrap(), 2);
        drop(b);
        std::fs::write(dir.path().join(BD_SEQ_FILE), "255\n").unwrap();
        assert_eq!(BdSeq::open(dir.path()).unwrap().current(), 0);
    }

    #[test]
    fn a_broken_bd_seq_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BD_SEQ_FILE), "garbage").unwrap();
        assert_eq!(BdSeq::open(dir.path()).unwrap().current(), 0);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.contains(".corrupt-")), "{names:?}");
    }
}
