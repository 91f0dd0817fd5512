//! Server logs: each line a server prints is stamped with the time and
//! appended to `data/logs/NAME.log`, rotated to `.1`, `.2`, … past a size;
//! the API's `logs` reads them back.
//!
//! All of it is blocking file IO, so none of it runs on an async thread: a
//! server's output is captured by a thread of its own ([`capture`]) and
//! reads go through `spawn_blocking` (see `LocalRuntime::logs`).

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
};

use tracing::warn;

/// Appends lines to a file, rotating it to `.1`, `.2`, … past `max_bytes`.
pub struct LogSink {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl LogSink {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_owned(), file, size, max_bytes, keep })
    }

    /// Appends `line`, prefixed with the time (RFC 3339, UTC, milliseconds).
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let stamped = format!("{} {line}\n", humantime::format_rfc3339_millis(std::time::SystemTime::now()));
        if self.size + stamped.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(stamped.as_bytes())?;
        self.size += stamped.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |i: u32| numbered(&self.path, i);
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(i), numbered(i + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

fn numbered(path: &Path, i: u32) -> PathBuf {
    PathBuf::from(format!("{}.{i}", path.display()))
}

/// Copies `output` (a server's stdout and stderr, one pipe) into `sink` line
/// by line on a thread of its own, until the server closes it.
pub fn capture(server: &str, output: impl Read + Send + 'static, mut sink: LogSink) -> std::io::Result<()> {
    std::thread::Builder::new().name(format!("log-{server}")).spawn(move || {
        let mut reader = BufReader::new(output);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            if let Err(e) = sink.write_line(text.trim_end_matches(['\n', '\r'])) {
                warn!(error = %e, "cannot write the server log");
                return;
            }
        }
    })?;
    Ok(())
}

/// A log line as [`LogSink`] writes it: RFC 3339 time, a space, the line.
pub fn parse_log_line(line: &str) -> Option<(i64, String)> {
    let (at, rest) = line.split_once(' ')?;
    let at = humantime::parse_rfc3339(at).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some((ms, rest.to_owned()))
}

/// The last `tail` lines written at or after `since_ms` (unix ms), oldest
/// first, from `path` and its `keep` rotated copies. Blocking.
pub fn read_logs(path: &Path, keep: u32, tail: usize, since_ms: Option<i64>) -> Vec<(i64, String)> {
    let files = std::iter::once(path.to_owned()).chain((1..=keep).map(|i| numbered(path, i)));
    // Newest file first; collect from the end until `tail` lines.
    let mut out: Vec<(i64, String)> = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        let mut lines: Vec<(i64, String)> = text.lines().filter_map(parse_log_line).collect();
        if let Some(since) = since_ms {
            lines.retain(|(at, _)| *at >= since);
        }
        lines.append(&mut out);
        out = lines;
        if out.len() >= tail {
            break;
        }
    }
    let skip = out.len().saturating_sub(tail);
    out.drain(..skip);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("respawn-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn log_rotation_keeps_n_files() {
        let dir = temp_dir("rotation");
        let path = dir.join("s.log");
        let mut sink = LogSink::open(&path, 200, 2).unwrap();
        for i in 0..50 {
            sink.write_line(&format!("line {i:04} padding")).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 200 && current.ends_with("line 0049 padding\n"), "{current}");
        let (at, text) = parse_log_line(current.lines().last().unwrap()).unwrap();
        assert_eq!(text, "line 0049 padding");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((now - at).abs() < 60_000, "stamped now: {at} vs {now}");
        assert!(dir.join("s.log.1").exists() && dir.join("s.log.2").exists());
        assert!(!dir.join("s.log.3").exists());
        // Reading back spans the rotated files, oldest first.
        let last = read_logs(&path, 2, 5, None);
        let texts: Vec<&str> = last.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            ["line 0045 padding", "line 0046 padding", "line 0047 padding", "line 0048 padding", "line 0049 padding"]
        );
        assert!(read_logs(&path, 2, 5, Some(now + 60_000)).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn capture_stamps_every_line_until_the_writer_closes() {
        let dir = temp_dir("capture");
        let path = dir.join("c.log");
        let (reader, mut writer) = std::io::pipe().unwrap();
        capture("c", reader, LogSink::open(&path, 1 << 20, 1).unwrap()).unwrap();
        writer.write_all(b"first\nsecond \xff\r\nthird").unwrap();
        drop(writer);
        let mut lines = Vec::new();
        for _ in 0..200 {
            lines = read_logs(&path, 1, 10, None);
            if lines.len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let texts: Vec<&str> = lines.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["first", "second \u{fffd}", "third"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
