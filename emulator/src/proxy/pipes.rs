//! The pipes between the driver and the action: fd 3 and the output streams, each read by a
//! thread of its own into a channel, with every line bounded.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, SyncSender};

use nix::fcntl::OFlag;

use super::MAX_RESULT_BYTES;

/// Longest log line kept (longer lines are cut).
const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// A line of the action's output.
pub(super) type LogLine = (Stream, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// A close-on-exec pipe (read end, write end); the fd 3 mapping clears the flag in the child.
pub(super) fn pipe() -> std::io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    Ok((File::from(r), File::from(w)))
}

pub(super) fn spawn_reader(name: &str, f: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name(format!("action-{name}"))
        .spawn(f);
    if let Err(e) = spawned {
        tracing::error!("cannot start the {name} reader thread: {e}");
    }
}

/// Reads result lines from fd 3 until EOF. An oversized line is reported as `Err(its length)`
/// and skipped up to its newline.
pub(super) fn read_results(r: File, tx: mpsc::Sender<Result<String, usize>>) {
    let mut r = BufReader::new(r);
    loop {
        match read_line_limited(&mut r, MAX_RESULT_BYTES) {
            Ok(None) | Err(_) => return,
            Ok(Some((line, len))) if len <= MAX_RESULT_BYTES => {
                if tx.send(Ok(line)).is_err() {
                    return;
                }
            }
            Ok(Some((_, len))) => {
                if tx.send(Err(len)).is_err() {
                    return;
                }
            }
        }
    }
}

pub(super) fn read_logs(r: File, stream: Stream, tx: SyncSender<LogLine>) {
    let mut r = BufReader::new(r);
    while let Ok(Some((line, _len))) = read_line_limited(&mut r, MAX_LOG_LINE_BYTES) {
        if tx.send((stream, line)).is_err() {
            return;
        }
    }
}

/// Reads one line (without its newline) of at most `limit` bytes, with the line's full length;
/// a longer line is cut and the rest skipped. `None` at EOF.
fn read_line_limited(
    r: &mut impl BufRead,
    limit: usize,
) -> std::io::Result<Option<(String, usize)>> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(limit as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    let mut len = buf.len();
    if buf.last() == Some(&b'\n') {
        buf.pop();
        len -= 1;
    } else if buf.len() > limit {
        buf.truncate(limit);
        let mut rest = Vec::new();
        r.read_until(b'\n', &mut rest)?;
        len += rest.len() - usize::from(rest.last() == Some(&b'\n'));
    }
    Ok(Some((String::from_utf8_lossy(&buf).into_owned(), len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped() {
        let mut r = BufReader::new(&b"abcdefgh\nok\n"[..]);
        assert_eq!(
            read_line_limited(&mut r, 4).unwrap(),
            Some(("abcd".into(), 8))
        );
        assert_eq!(
            read_line_limited(&mut r, 4).unwrap(),
            Some(("ok".into(), 2))
        );
        assert_eq!(read_line_limited(&mut r, 4).unwrap(), None);
    }
}
