//! Shaping tool output for the model: `cat -n` numbering and truncation with a visible note.

/// Longest line `read_file` shows; longer lines are cut (like the original).
pub const MAX_LINE_CHARS: usize = 2000;

/// Numbers `content`'s lines like `cat -n`, the first one as `first_line` (1-based).
pub fn numbered(content: &str, first_line: u64) -> String {
    let mut out = String::with_capacity(content.len() + content.len() / 8);
    for (i, line) in content.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let number = first_line + i as u64;
        out.push_str(&format!("{number:>6}\t"));
        match line.char_indices().nth(MAX_LINE_CHARS) {
            Some((cut, _)) => {
                out.push_str(&line[..cut]);
                out.push_str(" … [line truncated]");
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Cuts `text` to at most `max_chars` characters (plus a note), keeping its head and tail and
/// saying how much was left out in between.
pub fn truncate(text: String, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text;
    }
    let head_chars = max_chars / 2;
    let tail_chars = max_chars - head_chars;
    let head_end = text
        .char_indices()
        .nth(head_chars)
        .map_or(text.len(), |(i, _)| i);
    let tail_start = text
        .char_indices()
        .nth(total - tail_chars)
        .map_or(text.len(), |(i, _)| i);
    let omitted = total - head_chars - tail_chars;
    format!(
        "{}\n\n… [output truncated: {omitted} of {total} characters omitted] …\n\n{}",
        &text[..head_end],
        &text[tail_start..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_lines_from_the_offset() {
        assert_eq!(numbered("a\nb\n", 1), "     1\ta\n     2\tb\n");
        assert_eq!(numbered("x", 10), "    10\tx\n");
        assert_eq!(numbered("", 1), "");
    }

    #[test]
    fn long_lines_are_cut() {
        let line = "é".repeat(MAX_LINE_CHARS + 5);
        let out = numbered(&line, 1);
        assert!(out.contains("[line truncated]"));
        assert_eq!(out.matches('é').count(), MAX_LINE_CHARS);
    }

    #[test]
    fn truncation_keeps_head_and_tail_and_says_so() {
        assert_eq!(truncate("short".into(), 10), "short");
        let text: String = (0..100)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let out = truncate(text.clone(), 20);
        assert!(out.starts_with(&text[..10]), "{out}");
        assert!(out.ends_with(&text[90..]), "{out}");
        assert!(out.contains("80 of 100 characters omitted"), "{out}");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let out = truncate("ééééééééééé".into(), 4);
        assert!(out.starts_with("éé") && out.ends_with("éé"), "{out}");
    }
}
