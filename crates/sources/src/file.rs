//! A file source: one record per line, read once to the end or followed like `tail -F`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::decode::{Decoded, RecordFormat};
use crate::source::{Batch, BatchSink, SinkClosed, SourceHandle, StopSignal};
use crate::stats::now_millis;
use crate::{SourceError, SourceStats};

/// How a [`FileSource`] reads.
#[derive(Clone, Debug)]
pub struct FileConfig {
    pub path: PathBuf,
    pub format: RecordFormat,
    /// Follow appends and rotation forever (`tail -F`); otherwise read once to the end and finish.
    pub tail: bool,
    /// Longer lines are counted as errors and skipped; it also bounds the reader's memory.
    pub max_line_bytes: usize,
    /// Most rows per batch; a batch is also sent whenever the reader reaches the end of the file.
    pub batch_size: usize,
    /// How often a tailing reader looks for appended bytes, a rotation or a reappeared file.
    pub poll_interval: Duration,
}

impl FileConfig {
    pub fn new(path: impl Into<PathBuf>, format: RecordFormat) -> FileConfig {
        FileConfig {
            path: path.into(),
            format,
            tail: false,
            max_line_bytes: 1 << 20,
            batch_size: 1024,
            poll_interval: Duration::from_millis(50),
        }
    }
}

/// Reads a file line by line into rows (see [`RecordFormat`]).
///
/// Bad lines (malformed JSON, invalid UTF-8, longer than `max_line_bytes`) are counted in
/// [`SourceStats`] and skipped; the lines around them are kept. When tailing, a file whose inode
/// changes (rotated: renamed and recreated) is read from the start of the new file once the old
/// one is read to its end; a file that shrinks (truncated) is read again from its start; a file
/// that disappears is reported once as an error and waited for. A one-off read of a missing file
/// fails the source.
pub struct FileSource;

impl FileSource {
    /// Runs the source on its own thread (named `file-source`).
    pub fn spawn(config: FileConfig, sink: Sender<Batch>) -> Result<SourceHandle, SourceError> {
        if config.batch_size == 0 || config.max_line_bytes == 0 {
            return Err(SourceError::config("batch_size and max_line_bytes must be at least 1"));
        }
        if !config.tail {
            // A one-off read of a missing file is a mistake worth reporting at once.
            File::open(&config.path).map_err(|e| open_error(&config, e))?;
        }
        let stats = Arc::new(SourceStats::new());
        let thread_stats = Arc::clone(&stats);
        SourceHandle::spawn("file-source", stats, move |stop| {
            let sink = BatchSink::new(sink, stop.clone());
            match Reader::new(&config, &sink, &thread_stats).run(&stop) {
                Ok(()) | Err(ReadEnd::Closed) => Ok(()),
                Err(ReadEnd::Failed(e)) => Err(e),
            }
        })
    }
}

/// A tailed file's path may vanish for a moment during a rotation; longer than this, it is reported.
const MISSING_IS_AN_ERROR_AFTER: Duration = Duration::from_secs(1);

fn open_error(config: &FileConfig, e: std::io::Error) -> SourceError {
    SourceError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", config.path.display())))
}

enum ReadEnd {
    /// Stopped, or the receiver is gone.
    Closed,
    Failed(SourceError),
}

impl From<SinkClosed> for ReadEnd {
    fn from(_: SinkClosed) -> Self {
        ReadEnd::Closed
    }
}

/// The identity of an open file, to notice rotation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(meta: &std::fs::Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        FileId { dev: meta.dev(), ino: meta.ino() }
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        FileId { dev: 0, ino: 0 }
    }
}

struct Reader<'a> {
    config: &'a FileConfig,
    sink: &'a BatchSink,
    stats: &'a SourceStats,
    /// Bytes of the current, unfinished line.
    partial: Vec<u8>,
    /// The current line passed `max_line_bytes`: drop it up to its end.
    oversize: Option<usize>,
    batch: Batch,
    batch_bytes: u64,
}

impl<'a> Reader<'a> {
    fn new(config: &'a FileConfig, sink: &'a BatchSink, stats: &'a SourceStats) -> Reader<'a> {
        Reader {
            config,
            sink,
            stats,
            partial: Vec::new(),
            oversize: None,
            batch: Vec::with_capacity(config.batch_size),
            batch_bytes: 0,
        }
    }

    fn run(&mut self, stop: &StopSignal) -> Result<(), ReadEnd> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut missing_reported = false;
        loop {
            // Open (or wait for) the file.
            let mut file = match File::open(&self.config.path) {
                Ok(f) => f,
                Err(e) if self.config.tail => {
                    if !missing_reported {
                        self.stats.record_error(&open_error(self.config, e));
                        missing_reported = true;
                    }
                    if stop.wait_timeout(self.config.poll_interval) {
                        return Err(ReadEnd::Closed);
                    }
                    continue;
                }
                Err(e) => return Err(ReadEnd::Failed(open_error(self.config, e))),
            };
            missing_reported = false;
            let mut missing_since: Option<Instant> = None;
            let id = file.metadata().map(|m| file_id(&m)).map_err(|e| ReadEnd::Failed(e.into()))?;
            let mut pos: u64 = 0;
            'read: loop {
                if stop.is_stopped() {
                    return Err(ReadEnd::Closed);
                }
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.stats.record_error(&SourceError::Io(e));
                        if !self.config.tail {
                            return Err(ReadEnd::Closed);
                        }
                        break 'read;
                    }
                };
                if n > 0 {
                    pos += n as u64;
                    self.feed(&buf[..n])?;
                    continue;
                }
                // At the end of what is there now.
                if !self.config.tail {
                    self.end_line()?;
                    self.flush()?;
                    return Ok(());
                }
                self.flush()?;
                match std::fs::metadata(&self.config.path) {
                    Ok(meta) if file_id(&meta) != id => {
                        // Rotated: drain what the old file still has; its last line ends with it.
                        let mut rest = Vec::new();
                        if let Err(e) = file.read_to_end(&mut rest) {
                            self.stats.record_error(&SourceError::Io(e));
                        }
                        self.feed(&rest)?;
                        self.end_line()?;
                        self.flush()?;
                        break 'read;
                    }
                    Ok(meta) if meta.len() < pos => {
                        // Truncated in place: start over, dropping the unfinished line.
                        self.partial.clear();
                        self.oversize = None;
                        file.seek(SeekFrom::Start(0)).map_err(|e| ReadEnd::Failed(e.into()))?;
                        pos = 0;
                        continue;
                    }
                    Ok(_) => missing_since = None,
                    Err(e) => {
                        // Gone: maybe mid-rotation, so only a lasting absence is an error. The open
                        // handle is still read meanwhile.
                        let since = *missing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= MISSING_IS_AN_ERROR_AFTER && !missing_reported {
                            self.stats.record_error(&open_error(self.config, e));
                            missing_reported = true;
                        }
                    }
                }
                if stop.wait_timeout(self.config.poll_interval) {
                    return Err(ReadEnd::Closed);
                }
            }
        }
    }

    /// Splits `bytes` into lines and decodes each complete one.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ReadEnd> {
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            let (line, rest) = (&bytes[..i], &bytes[i + 1..]);
            bytes = rest;
            if let Some(size) = self.oversize.take() {
                self.reject(SourceError::Oversize { size: size + line.len(), limit: self.config.max_line_bytes });
                continue;
            }
            if self.partial.is_empty() {
                if line.len() > self.config.max_line_bytes {
                    self.reject(SourceError::Oversize { size: line.len(), limit: self.config.max_line_bytes });
                } else {
                    self.decode(line)?;
                }
            } else {
                self.partial.extend_from_slice(line);
                let line = std::mem::take(&mut self.partial);
                if line.len() > self.config.max_line_bytes {
                    self.reject(SourceError::Oversize { size: line.len(), limit: self.config.max_line_bytes });
                } else {
                    self.decode(&line)?;
                }
                self.partial = line;
                self.partial.clear();
            }
        }
        if let Some(size) = self.oversize.as_mut() {
            *size += bytes.len();
        } else if self.partial.len() + bytes.len() > self.config.max_line_bytes {
            self.oversize = Some(self.partial.len() + bytes.len());
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// The file ended: an unterminated last line counts as a line.
    fn end_line(&mut self) -> Result<(), ReadEnd> {
        if let Some(size) = self.oversize.take() {
            self.reject(SourceError::Oversize { size, limit: self.config.max_line_bytes });
        }
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.decode(&line)?;
        }
        Ok(())
    }

    fn decode(&mut self, line: &[u8]) -> Result<(), ReadEnd> {
        match self.config.format.decode_line(line) {
            Ok(Decoded::Row(row)) => {
                self.batch.push(row);
                self.batch_bytes += line.len() as u64 + 1;
                if self.batch.len() >= self.config.batch_size {
                    self.flush()?;
                }
            }
            Ok(Decoded::Skipped) => self.stats.record_skipped(1),
            Err(e) => self.reject(e),
        }
        Ok(())
    }

    fn reject(&self, error: SourceError) {
        self.stats.record_error(&error);
    }

    fn flush(&mut self) -> Result<(), ReadEnd> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.config.batch_size));
        let n = batch.len() as u64;
        self.sink.send_blocking(batch)?;
        self.stats.record_events(n, std::mem::take(&mut self.batch_bytes), now_millis());
        Ok(())
    }
}
