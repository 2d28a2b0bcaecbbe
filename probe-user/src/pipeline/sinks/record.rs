//! The record file: every event as one JSON line (docs/events.md), to stdout, a new file, or the
//! daemon's appended file rotated by size.
//!
//! Every file is created 0600 and never through a symlink. The daemon's file is appended to (a
//! restarted daemon goes on where it stopped) and rotated by size: `FILE` is renamed `FILE.1`
//! (`FILE.1` to `FILE.2`, ...; the oldest beyond `keep` is deleted) once it would grow past the
//! limit. Lines are never split across files, so a collector tailing `FILE`
//! (docs/collectors.md) sees whole lines.
use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use super::super::{Sink, SinkError, Stats, Tick};
use crate::event::Event;

const WHAT: &str = "the record file";

/// A record file that cannot be opened; says why and what to do.
#[derive(Debug, thiserror::Error)]
#[error("cannot {verb} {}: {err}{hint}", path.display())]
pub struct OpenError {
    verb: &'static str,
    path: PathBuf,
    err: io::Error,
    hint: &'static str,
}

impl OpenError {
    fn new(verb: &'static str, path: &Path, err: io::Error) -> Self {
        let hint = match err.kind() {
            io::ErrorKind::AlreadyExists => " (it exists: pass --force to overwrite)",
            io::ErrorKind::PermissionDenied => " (permission denied: pick a writable path)",
            io::ErrorKind::NotFound => {
                " (its directory does not exist: create it or pick another path)"
            }
            io::ErrorKind::IsADirectory => " (it is a directory: give a file path inside it)",
            io::ErrorKind::ReadOnlyFilesystem => {
                " (read-only file system: pick a path on a writable one, e.g. under /var/tmp)"
            }
            _ if err.raw_os_error() == Some(libc::ELOOP) => {
                " (it is a symlink: gwtrace never follows one)"
            }
            _ => "",
        };
        Self {
            verb,
            path: path.to_owned(),
            err,
            hint,
        }
    }
}

/// Where the lines go.
enum Target {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<File>),
    Rotating(RotatingFile),
}

/// Writes every event as a JSON line; flushed every tick and at the end.
pub struct RecordSink {
    target: Target,
    line: Vec<u8>,
}

impl RecordSink {
    fn with(target: Target) -> Self {
        Self {
            target,
            line: Vec::new(),
        }
    }

    /// Lines to stdout.
    #[must_use]
    pub fn stdout() -> Self {
        Self::with(Target::Stdout(BufWriter::new(io::stdout())))
    }

    /// A new file (`-`: stdout), never over an existing one unless `force`.
    pub fn create(path: &Path, force: bool) -> Result<Self, OpenError> {
        if path == Path::new("-") {
            return Ok(Self::stdout());
        }
        let mut o = OpenOptions::new();
        o.write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
        if force {
            o.create(true).truncate(true);
        } else {
            o.create_new(true);
        }
        let f = o
            .open(path)
            .map_err(|e| OpenError::new("create", path, e))?;
        Ok(Self::with(Target::File(BufWriter::new(f))))
    }

    /// The daemon's file (`-`: stdout): appended to (`truncate`: started empty), rotated past
    /// `limit_bytes` keeping `keep` old files (see [`RotatingFile`]).
    pub fn append(
        path: &Path,
        truncate: bool,
        limit_bytes: Option<u64>,
        keep: u32,
    ) -> Result<Self, OpenError> {
        if path == Path::new("-") {
            return Ok(Self::stdout());
        }
        RotatingFile::open(path, truncate, limit_bytes, keep)
            .map(|f| Self::with(Target::Rotating(f)))
            .map_err(|e| OpenError::new("open", path, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.target {
            Target::Stdout(w) => w.flush(),
            Target::File(w) => w.flush(),
            Target::Rotating(f) => f.flush(),
        }
    }
}

impl Sink for RecordSink {
    fn event(&mut self, ev: &Event) -> Result<(), SinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, ev).map_err(SinkError::json(WHAT))?;
        let line = &self.line;
        match &mut self.target {
            Target::Stdout(w) => w.write_all(line).and_then(|()| w.write_all(b"\n")),
            Target::File(w) => w.write_all(line).and_then(|()| w.write_all(b"\n")),
            Target::Rotating(f) => f.write_line(line),
        }
        .map_err(SinkError::io(WHAT))
    }

    fn tick(&mut self, _tick: &Tick<'_>) -> Result<(), SinkError> {
        self.flush().map_err(SinkError::io(WHAT))
    }

    fn finish(&mut self, _stats: &Stats) -> Result<(), SinkError> {
        self.flush().map_err(SinkError::io(WHAT))
    }
}

/// An append-only line writer that rotates by size.
pub struct RotatingFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// Bytes in the current file (what was there when opened, plus what we wrote).
    size: u64,
    /// Rotate before a line would take the file past this many bytes; None = never.
    limit: Option<u64>,
    /// Rotated files kept (`FILE.1` .. `FILE.keep`).
    keep: u32,
}

fn open_append(path: &Path, truncate: bool) -> io::Result<(File, u64)> {
    let mut o = OpenOptions::new();
    o.create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    let f = o.open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingFile {
    /// Opens `path` for appending (`truncate`: start it empty). `limit_bytes` 0 or None never
    /// rotates; `keep` is how many rotated files stay (at least 1 when rotating).
    pub fn open(
        path: &Path,
        truncate: bool,
        limit_bytes: Option<u64>,
        keep: u32,
    ) -> io::Result<Self> {
        let (f, size) = open_append(path, truncate)?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(f),
            size,
            limit: limit_bytes.filter(|&l| l > 0),
            keep: keep.max(1),
        })
    }

    /// Writes one line (`line` without its newline), rotating first if it would not fit.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = u64::try_from(line.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        if let Some(limit) = self.limit
            && self.size > 0
            && self.size.saturating_add(len) > limit
        {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    /// Renames `FILE` to `FILE.1` (shifting older ones up, dropping the oldest) and starts a new
    /// `FILE`.
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let _ = std::fs::remove_file(numbered(&self.path, self.keep));
        for n in (1..self.keep).rev() {
            match std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        let (f, size) = open_append(&self.path, false)?;
        self.out = BufWriter::new(f);
        self.size = size;
        Ok(())
    }

    /// Flushes buffered lines to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn appends_across_reopens() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("events.jsonl");
        for i in 0..2 {
            let mut f = RotatingFile::open(&p, false, None, 3).unwrap();
            f.write_line(format!("{{\"n\":{i}}}").as_bytes()).unwrap();
            f.flush().unwrap();
        }
        assert_eq!(lines(&p), ["{\"n\":0}", "{\"n\":1}"]);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        // truncate starts over.
        let mut f = RotatingFile::open(&p, true, None, 3).unwrap();
        f.write_line(b"x").unwrap();
        f.flush().unwrap();
        assert_eq!(lines(&p), ["x"]);
    }

    #[test]
    fn rotates_by_size_keeping_whole_lines_and_a_few_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("events.jsonl");
        // 10-byte lines (9 + newline), 25-byte limit: two lines per file.
        let mut f = RotatingFile::open(&p, false, Some(25), 2).unwrap();
        for i in 0..7 {
            f.write_line(format!("line{i:05}").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        assert_eq!(lines(&p), ["line00006"]);
        assert_eq!(lines(&numbered(&p, 1)), ["line00004", "line00005"]);
        assert_eq!(lines(&numbered(&p, 2)), ["line00002", "line00003"]);
        assert!(!numbered(&p, 3).exists(), "only `keep` rotated files stay");
    }

    #[test]
    fn a_line_longer_than_the_limit_still_goes_out_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e");
        let mut f = RotatingFile::open(&p, false, Some(4), 1).unwrap();
        f.write_line(b"0123456789").unwrap();
        f.write_line(b"abcdefghij").unwrap();
        f.flush().unwrap();
        assert_eq!(lines(&p), ["abcdefghij"]);
        assert_eq!(lines(&numbered(&p, 1)), ["0123456789"]);
    }

    #[test]
    fn never_follows_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "keep\n").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(RotatingFile::open(&link, false, None, 1).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
    }
}
