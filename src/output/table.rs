//! Tables that fit where they are printed.
//!
//! On a terminal, comfy-table's dynamic arrangement wraps cells so the
//! table is never wider than the terminal: an 80-column terminal gets an
//! 80-column table, not lines that break mid-border. In a pipe or a file,
//! plain columns instead: no box drawing, no wrapping, one line per row,
//! an upper-case header, cells set apart by three spaces (as kubectl's and
//! helm's tables), so `grep`, `awk` and `cut` work on them.
//!
//! The width, on a terminal: `COLUMNS` when it holds a usable number (the
//! user's override, as `ls` and `git` honour it; shells set it but rarely
//! export it), else the terminal's own width (comfy-table asks the
//! terminal), else 80. In a pipe `COLUMNS` changes nothing: a script reading
//! plain columns must not get a wrapped table because its shell exported
//! one. Which form and which width is [`layout`], a pure function; the
//! forms are [`fit`] and [`plain`].

use std::io::IsTerminal;

use comfy_table::{ColumnConstraint, ContentArrangement, Table, presets};

/// The width when neither `COLUMNS` nor the terminal says one.
pub const DEFAULT_WIDTH: u16 = 80;

/// Narrower than this, a width is taken for a mistake (an unset terminal
/// size reads as 0): no table fits in it.
const NARROWEST: u16 = 20;

/// How a table is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A box-drawn table, cells wrapped to fit this many columns.
    Fit(u16),
    /// Plain columns, one line per row, nothing wrapped.
    Plain,
}

/// The layout for stdout: a table fitted to the width on a terminal, plain
/// columns anywhere else.
pub fn layout(stdout_is_terminal: bool, columns: Option<&str>, terminal: Option<u16>) -> Layout {
    if !stdout_is_terminal {
        return Layout::Plain;
    }
    let usable = |w: u16| (w >= NARROWEST).then_some(w);
    let from_env = columns
        .and_then(|c| c.trim().parse::<u16>().ok())
        .and_then(usable);
    Layout::Fit(
        from_env
            .or_else(|| terminal.and_then(usable))
            .unwrap_or(DEFAULT_WIDTH),
    )
}

/// The layout of this process's stdout.
pub fn detect() -> Layout {
    let terminal = std::io::stdout().is_terminal();
    let columns = std::env::var("COLUMNS").ok();
    // Asked only on a terminal: comfy-table reads its size there.
    let size = if terminal { Table::new().width() } else { None };
    layout(terminal, columns.as_deref(), size)
}

/// Print `rows` under `header` in `layout`.
pub fn render(layout: Layout, header: &[&str], rows: &[Vec<String>]) -> String {
    match layout {
        Layout::Fit(width) => fit(header, rows, width, &[]),
        Layout::Plain => plain(header, rows),
    }
}

/// A box-drawn table no wider than `width`, its cells wrapped where they
/// must be; the columns in `whole` keep their content on one line (a
/// deployment id a user copies must not break), the others give way.
pub fn fit(header: &[&str], rows: &[Vec<String>], width: u16, whole: &[usize]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row.clone());
    }
    for &i in whole {
        if let Some(column) = table.column_mut(i) {
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    table.to_string()
}

/// Plain columns: the header in upper case, each cell padded to its
/// column's widest, three spaces between columns, an empty cell shown as
/// `-` and a cell's lines joined with `; `, so every row is one line with
/// the same number of cells.
pub fn plain(header: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        let one_line = s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if one_line.is_empty() {
            "-".to_string()
        } else {
            one_line
        }
    };
    let lines: Vec<Vec<String>> =
        std::iter::once(header.iter().map(|h| h.to_uppercase()).collect())
            .chain(rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()))
            .collect();
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .filter_map(|l| l.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    lines
        .iter()
        .map(|line| {
            let mut out = String::new();
            for (i, c) in line.iter().enumerate() {
                out.push_str(c);
                if i + 1 < line.len() {
                    let pad = widths[i] - c.chars().count() + 3;
                    out.push_str(&" ".repeat(pad));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect();
        vec![
            row(&[
                "staging-20250101-120002",
                "failed",
                "broken-2",
                "deploy-backend: api-green: ImagePullBackOff: Back-off pulling image registry.example.invalid/maily/maily-api:broken-2",
            ]),
            row(&[
                "staging-20250101-120001",
                "succeeded",
                "v2",
                "traffic 10→25→50→100, old slot scaled down\nby tester@build-host-7",
            ]),
            row(&["staging-20250101-120000", "succeeded", "v1", ""]),
        ]
    }

    const HEADER: [&str; 4] = ["deployment", "outcome", "release", "details"];

    #[test]
    fn a_pipe_gets_plain_columns_whatever_columns_says() {
        assert_eq!(layout(false, Some("80"), Some(80)), Layout::Plain);
        assert_eq!(layout(false, None, None), Layout::Plain);
    }

    #[test]
    fn a_terminal_gets_columns_then_its_own_width_then_80() {
        assert_eq!(layout(true, Some("100"), Some(200)), Layout::Fit(100));
        assert_eq!(layout(true, None, Some(132)), Layout::Fit(132));
        assert_eq!(layout(true, Some("wide"), Some(132)), Layout::Fit(132));
        // An unset terminal size reads as 0 columns.
        assert_eq!(layout(true, None, Some(0)), Layout::Fit(DEFAULT_WIDTH));
        assert_eq!(layout(true, Some("0"), None), Layout::Fit(DEFAULT_WIDTH));
        assert_eq!(layout(true, None, None), Layout::Fit(DEFAULT_WIDTH));
    }

    #[test]
    fn a_fitted_table_is_never_wider_than_its_width_and_keeps_whole_columns_whole() {
        for width in [60, 80, 100, 160] {
            let text = fit(&HEADER, &rows(), width, &[0]);
            for line in text.lines() {
                assert!(
                    line.chars().count() <= usize::from(width),
                    "{width}: {line:?} is {} wide\n{text}",
                    line.chars().count()
                );
            }
            assert!(
                text.contains("staging-20250101-120002"),
                "the id kept on one line at {width}:\n{text}"
            );
        }
        let wide = fit(&HEADER, &rows(), 200, &[0]);
        assert!(
            wide.lines()
                .any(|l| l.contains("registry.example.invalid/maily/maily-api:broken-2")),
            "nothing wrapped when it fits:\n{wide}"
        );
    }

    #[test]
    fn plain_columns_are_one_line_per_row_with_no_box_drawing() {
        let text = plain(&HEADER, &rows());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["DEPLOYMENT", "OUTCOME", "RELEASE", "DETAILS"]
        );
        assert!(
            !text.contains(['│', '─', '┌', '╞']),
            "no box drawing:\n{text}"
        );
        // awk's fields: the first columns hold no space.
        let fields: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            &fields[..3],
            &["staging-20250101-120001", "succeeded", "v2"]
        );
        assert!(lines[2].ends_with("old slot scaled down; by tester@build-host-7"));
        // Every column starts where its header does.
        let at = lines[0].find("RELEASE").unwrap();
        for l in &lines[1..] {
            assert_ne!(&l[at..at + 1], " ", "{l}");
        }
        let empty: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(empty.last(), Some(&"-"), "an empty cell is -");
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }
}
