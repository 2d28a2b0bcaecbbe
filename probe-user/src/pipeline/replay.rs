//! The replay source: a file written by `gwtrace record` (or `--record`), read a chunk at a time
//! (constant memory), with an error naming the line of anything it cannot read.
use std::{
    io::{BufRead, BufReader, Read as _},
    path::{Path, PathBuf},
};

use super::{Source, SourceError};
use crate::{
    capture::Counters,
    event::{Event, SCHEMA_VERSION},
};

/// Longest line accepted (a facts line of a busy host is well under this).
pub const MAX_LINE: usize = 16 << 20;
/// Events handed over per drain.
const CHUNK: usize = 1024;

/// Why a record file cannot be replayed. Every variant but [`ReplayError::Read`] is the file's
/// fault (bad usage), and says which line.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {}: {err}; give a file written by `gwtrace record -o FILE` or `gwtrace --record FILE`", path.display())]
    Open { path: PathBuf, err: std::io::Error },
    #[error("{} is a directory; give a file written by `gwtrace record -o FILE` or `gwtrace --record FILE`", path.display())]
    Directory { path: PathBuf },
    #[error("{}: read error", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: line longer than {MAX_LINE} bytes: not a gwtrace record file", path.display())]
    TooLong { path: PathBuf, line: u64 },
    #[error("{}:{line}: not a JSON line ({err}); truncated or corrupted record file?", path.display())]
    NotJson {
        path: PathBuf,
        line: u64,
        err: serde_json::Error,
    },
    #[error(
        "{}:{line}: schema version {version} is newer than this gwtrace understands ({SCHEMA_VERSION}): upgrade gwtrace",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        line: u64,
        version: u64,
    },
    #[error("{}:{line}: not a gwtrace event ({err})", path.display())]
    NotEvent {
        path: PathBuf,
        line: u64,
        err: serde_json::Error,
    },
    #[error("{}: empty file: nothing to explain", path.display())]
    Empty { path: PathBuf },
}

impl ReplayError {
    /// Whether the file is at fault (a usage error) rather than the machine (an I/O error).
    #[must_use]
    pub fn is_usage(&self) -> bool {
        !matches!(self, Self::Read { .. })
    }
}

/// A recording being replayed.
pub struct Replay<R> {
    path: PathBuf,
    reader: R,
    line: Vec<u8>,
    /// Lines read so far (blank ones included).
    lines: u64,
    last_ns: u64,
    done: bool,
}

impl Replay<BufReader<std::fs::File>> {
    /// Opens a record file.
    pub fn open(path: &Path) -> Result<Self, ReplayError> {
        if path.is_dir() {
            return Err(ReplayError::Directory {
                path: path.to_owned(),
            });
        }
        let file = std::fs::File::open(path).map_err(|err| ReplayError::Open {
            path: path.to_owned(),
            err,
        })?;
        Ok(Self::new(path, BufReader::new(file)))
    }
}

impl<R: BufRead> Replay<R> {
    /// Replays JSON lines from `reader`; `path` names it in errors.
    pub fn new(path: &Path, reader: R) -> Self {
        Self {
            path: path.to_owned(),
            reader,
            line: Vec::new(),
            lines: 0,
            last_ns: 0,
            done: false,
        }
    }

    /// The next event, `None` at the end of the file.
    fn next_event(&mut self) -> Result<Option<Event>, ReplayError> {
        loop {
            self.line.clear();
            let read = (&mut self.reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(|source| ReplayError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.lines += 1;
            let (path, line) = (&self.path, self.lines);
            if self.line.len() > MAX_LINE {
                return Err(ReplayError::TooLong {
                    path: path.clone(),
                    line,
                });
            }
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|err| ReplayError::NotJson {
                    path: path.clone(),
                    line,
                    err,
                })?;
            let version = v.get("v").and_then(serde_json::Value::as_u64).unwrap_or(0);
            if version > u64::from(SCHEMA_VERSION) {
                return Err(ReplayError::TooNew {
                    path: path.clone(),
                    line,
                    version,
                });
            }
            let ev: Event = serde_json::from_value(v).map_err(|err| ReplayError::NotEvent {
                path: path.clone(),
                line,
                err,
            })?;
            self.last_ns = self.last_ns.max(ev.mono_ns);
            return Ok(Some(ev));
        }
    }
}

impl<R: BufRead> Source for Replay<R> {
    fn drain(&mut self, out: &mut Vec<Event>) -> Result<Option<usize>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let mut n = 0;
        while n < CHUNK {
            let Some(ev) = self.next_event()? else {
                self.done = true;
                if self.lines == 0 {
                    return Err(ReplayError::Empty {
                        path: self.path.clone(),
                    }
                    .into());
                }
                break;
            };
            out.push(ev);
            n += 1;
        }
        Ok(Some(n))
    }

    fn tick(&mut self, _now_ns: u64, _out: &mut Vec<Event>) -> Result<(), SourceError> {
        Ok(())
    }

    fn counters(&mut self) -> Option<Counters> {
        None
    }

    fn finish(
        &mut self,
        _now_ns: u64,
        _out: &mut Vec<Event>,
    ) -> Result<Option<Counters>, SourceError> {
        // A run stopped early (deadline, signal) stops reading there.
        Ok(None)
    }

    fn now_ns(&self) -> u64 {
        self.last_ns
    }
}
