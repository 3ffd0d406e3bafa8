//! Reading what a child process prints (terraform, pg_dump, pg_restore,
//! Trivy) with bounds: its output is an outside input like any other. Only
//! what is kept grows memory: a stream kept whole is refused past its size
//! (reading stops there: the caller ends the child), one kept for an error
//! message keeps its end, and one only logged is read to its end line by
//! line, each line clipped, so the child never blocks on a full pipe.

use std::collections::VecDeque;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// The most of one logged line kept; the rest of a longer line is read
/// and dropped.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// All of `r`, or `None` once it passes `limit` bytes (reading stops).
pub async fn whole(r: impl AsyncRead + Unpin, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(&mut out).await?;
    Ok((out.len() <= limit).then_some(out))
}

/// The last `keep` bytes (or a little more) of `r`, read to its end so the
/// writer never blocks on a full pipe.
pub async fn tail(mut r: impl AsyncRead + Unpin, keep: usize) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(kept);
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > 2 * keep {
            kept.drain(..kept.len() - keep);
        }
    }
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

/// Reads `r` to its end line by line, handing each (clipped to
/// [`MAX_LINE_BYTES`]) to `each` with a note when it was clipped, and
/// returns its last `keep` lines.
pub async fn lines(
    r: impl AsyncRead + Unpin,
    keep: usize,
    mut each: impl FnMut(&str, &str),
) -> String {
    let mut reader = BufReader::new(r);
    let mut kept = VecDeque::new();
    while let Ok(Some((bytes, len))) = next_line(&mut reader, MAX_LINE_BYTES).await {
        let line = String::from_utf8_lossy(&bytes);
        let clipped = if len > bytes.len() {
            format!(" … ({len} bytes, clipped)")
        } else {
            String::new()
        };
        each(&line, &clipped);
        if keep > 0 {
            if kept.len() == keep {
                kept.pop_front();
            }
            kept.push_back(line.into_owned() + &clipped);
        }
    }
    kept.into_iter().map(|l| l + "\n").collect()
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
    async fn a_stream_kept_whole_is_refused_past_its_bound() {
        let big = std::io::Cursor::new(vec![b'y'; 1 << 20]);
        assert_eq!(whole(big, 64 << 10).await.unwrap(), None);
        let small = std::io::Cursor::new(b"{\"a\": 1}\n".to_vec());
        assert_eq!(
            whole(small, 64 << 10).await.unwrap(),
            Some(b"{\"a\": 1}\n".to_vec())
        );
    }

    #[tokio::test]
    async fn a_stream_logged_line_by_line_is_read_to_its_end_and_keeps_its_last_lines() {
        let input: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        let mut seen = 0;
        let kept = lines(std::io::Cursor::new(input), 3, |_, _| seen += 1).await;
        assert_eq!(seen, 10);
        assert_eq!(kept, "line 8\nline 9\nline 10\n");
    }

    #[tokio::test]
    async fn a_tail_keeps_the_end_of_a_long_stream() {
        let input: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let kept = tail(std::io::Cursor::new(input.clone()), 1000)
            .await
            .unwrap();
        assert!(
            kept.len() >= 1000 && input.ends_with(&kept),
            "{}",
            kept.len()
        );
    }
}
