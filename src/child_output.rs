//! Reading what a child process prints (terraform, pg_dump, pg_restore)
//! with bounds: its output is an outside input like any other. The pipes
//! are always read to their end, so the child never blocks on a full one,
//! but only what is kept grows memory: a line past its bound is clipped,
//! a stream kept whole is refused past its size, one kept for an error
//! message keeps its last lines.

use std::collections::VecDeque;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

/// The most of one line handed on when the stream is not kept whole; the
/// rest of a longer line is read and dropped.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// What is kept of a stream read to its end.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// All of it (JSON, a table of contents), refused past this many bytes.
    Whole(usize),
    /// Its last this many lines (stderr, for an error message).
    Tail(usize),
    /// Nothing (output only logged).
    Nothing,
}

/// The next line of `reader`, at most `max` bytes of it kept, the rest of
/// a longer line read and dropped: the line and its full length.
pub async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok((len > 0).then_some((line, len)));
        }
        let end = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        len = len.saturating_add(chunk.len());
        let used = end.map_or(buf.len(), |e| e + 1);
        reader.consume(used);
        if end.is_some() {
            return Ok(Some((line, len)));
        }
    }
}

/// Reads `reader` to its end, handing each line (clipped to
/// [`MAX_LINE_BYTES`] unless kept whole) to `each` with a note when it was
/// clipped, and returns what `keep` keeps; `Err` says a stream kept whole
/// was past its bound (it is still read to its end).
pub async fn read<R: AsyncRead + Unpin>(
    reader: R,
    keep: Keep,
    mut each: impl FnMut(&str, &str),
) -> Result<String, String> {
    let mut reader = BufReader::new(reader);
    let max_line = match keep {
        Keep::Whole(max) => max,
        Keep::Tail(_) | Keep::Nothing => MAX_LINE_BYTES,
    };
    let mut whole = String::new();
    let mut over = false;
    let mut tail = VecDeque::new();
    while let Ok(Some((bytes, len))) = next_line(&mut reader, max_line).await {
        let line = String::from_utf8_lossy(&bytes);
        let clipped = if len > bytes.len() {
            format!(" … ({len} bytes, clipped)")
        } else {
            String::new()
        };
        each(&line, &clipped);
        match keep {
            Keep::Whole(max) if !over => {
                if len > bytes.len() || whole.len() + len + 1 > max {
                    over = true;
                    whole = String::new();
                } else {
                    whole.push_str(&line);
                    whole.push('\n');
                }
            }
            Keep::Tail(lines) => {
                if tail.len() == lines {
                    tail.pop_front();
                }
                tail.push_back(line.into_owned() + &clipped);
            }
            Keep::Whole(_) | Keep::Nothing => {}
        }
    }
    match keep {
        Keep::Whole(max) if over => Err(format!(
            "it printed more than {max} bytes, more than the tool reads"
        )),
        Keep::Whole(_) => Ok(whole),
        Keep::Tail(_) => Ok(tail.into_iter().map(|l| l + "\n").collect()),
        Keep::Nothing => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_longer_than_the_bound_is_clipped_and_the_next_read_whole() {
        let long = "x".repeat(100);
        let input = format!("{long}\nshort\n\nlast");
        let mut reader = BufReader::new(input.as_bytes());
        let (first, len) = next_line(&mut reader, 10).await.unwrap().unwrap();
        assert_eq!((first, len), (b"xxxxxxxxxx".to_vec(), 100));
        assert_eq!(
            next_line(&mut reader, 10).await.unwrap(),
            Some((b"short".to_vec(), 5))
        );
        assert_eq!(next_line(&mut reader, 10).await.unwrap(), Some((vec![], 0)));
        assert_eq!(
            next_line(&mut reader, 10).await.unwrap(),
            Some((b"last".to_vec(), 4))
        );
        assert_eq!(next_line(&mut reader, 10).await.unwrap(), None);
    }

    #[tokio::test]
    async fn captured_output_past_its_bound_is_refused_after_the_stream_is_drained() {
        // 1 MiB in lines of 1 KiB, captured with a bound of 64 KiB.
        let line = format!("{}\n", "y".repeat(1023));
        let big = std::io::Cursor::new(line.repeat(1024));
        let why = read(big, Keep::Whole(64 << 10), |_, _| {})
            .await
            .unwrap_err();
        assert!(why.contains("more than 65536 bytes"), "{why}");
        let small = std::io::Cursor::new("{\"a\": 1}\n".to_string());
        assert_eq!(
            read(small, Keep::Whole(64 << 10), |_, _| {}).await,
            Ok("{\"a\": 1}\n".to_string())
        );
    }

    #[tokio::test]
    async fn stderr_keeps_its_last_lines() {
        let input: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        let kept = read(std::io::Cursor::new(input), Keep::Tail(3), |_, _| {})
            .await
            .unwrap();
        assert_eq!(kept, "line 8\nline 9\nline 10\n");
    }
}
