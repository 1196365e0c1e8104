//! A small RFC 4180 reader: what a street office's spreadsheet exports (UTF-8, optional BOM,
//! quoted fields with `""` escapes and line breaks, CRLF or LF). Rows come with their line
//! numbers so that errors can name them.

use super::Malformed;

/// One record: its first line number (1-based) and its fields.
pub type Record = (usize, Vec<String>);

/// Splits `text` into records; an unterminated quote is an error naming its line.
pub fn records(text: &str) -> Result<Vec<Record>, Malformed> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1usize;
    let mut start = 1usize;
    let mut quoted = false;
    let mut at_field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    out.push((start, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start = line;
                at_field_start = true;
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err(Malformed(format!(
            "line {start}: a quoted field is not closed"
        )));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        out.push((start, fields));
    }
    Ok(out)
}

/// A table with a header row: each row as (line, column name → value).
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    /// Parses `text`, requiring the `required` columns in the header.
    pub fn parse(text: &str, required: &[&str]) -> Result<Self, Malformed> {
        let mut recs = records(text)?.into_iter();
        let (_, header) = recs
            .next()
            .ok_or_else(|| Malformed("the file is empty; a header row is required".to_owned()))?;
        let header: Vec<String> = header.into_iter().map(|h| h.trim().to_owned()).collect();
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|r| !header.iter().any(|h| h == r))
            .collect();
        if !missing.is_empty() {
            return Err(Malformed(format!(
                "header: missing column(s) {}; the header is {}",
                missing.join(", "),
                header.join(",")
            )));
        }
        let mut rows = Vec::new();
        for (line, fields) in recs {
            if fields.len() != header.len() {
                return Err(Malformed(format!(
                    "line {line}: {} field(s), the header has {}",
                    fields.len(),
                    header.len()
                )));
            }
            rows.push((line, fields));
        }
        Ok(Self { header, rows })
    }

    /// The value of `column` in a row (trimmed).
    pub fn get<'a>(&self, row: &'a [String], column: &str) -> &'a str {
        self.header
            .iter()
            .position(|h| h == column)
            .and_then(|i| row.get(i))
            .map_or("", |v| v.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_line_breaks_bom_and_crlf() {
        let text = "\u{feff}a,b,c\r\n1,\"x, \"\"y\"\"\",3\r\n\r\n2,\"two\nlines\",4\n";
        let r = records(text).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], (2, vec!["1".into(), "x, \"y\"".into(), "3".into()]));
        assert_eq!(r[2].0, 4);
        assert_eq!(r[2].1[1], "two\nlines");
        assert!(records("a,\"b\n").unwrap_err().0.contains("line 1"));
        let t = Table::parse("code,name\n1,a\n2,b,c\n", &["code"]);
        assert!(t.err().unwrap().0.contains("line 3"));
        let t = Table::parse("code,name\n", &["code", "level"]);
        assert!(t.err().unwrap().0.contains("missing column(s) level"));
    }
}
