//! Plain-text tables for people: left-aligned columns two spaces apart, as `run --once`'s
//! summary and `status` print them.

use std::io::Write;

/// Writes `header` and `rows`, each column as wide as its widest cell.
pub fn write<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        cells
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut out = Vec::new();
        let rows = [
            ["a".to_owned(), "long cell".to_owned()],
            ["wider".to_owned(), "x".to_owned()],
        ];
        super::write(&mut out, ["H1", "H2"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "H1     H2\na      long cell\nwider  x\n"
        );
    }
}
