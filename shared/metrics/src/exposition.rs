//! A strict reader of the Prometheus text exposition format: every line must be blank, a
//! comment (`# HELP`, `# TYPE` or any other `#` line), or a sample `name{label="value",…} value
//! [timestamp]`. Tests use it to check what `/metrics` serves and to read values from it.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of an exposition text.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<Sample>);

/// A line that is neither a comment nor a well-formed sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Parses `text`, failing on the first malformed line.
pub fn parse(text: &str) -> Result<Samples, ParseError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        let fail = |reason| ParseError {
            line: index + 1,
            reason,
            text: raw.to_owned(),
        };
        if let Some(comment) = line.strip_prefix('#') {
            check_comment(comment).map_err(fail)?;
            continue;
        }
        samples.push(parse_sample(line).map_err(fail)?);
    }
    Ok(Samples(samples))
}

impl Samples {
    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the matching samples' values (`None` when none matches).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .map(|s| s.value)
            .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
    }
}

fn check_comment(comment: &str) -> Result<(), &'static str> {
    let mut words = comment.split_whitespace();
    match words.next() {
        Some("HELP") => match words.next() {
            Some(name) if valid_name(name) => Ok(()),
            _ => Err("HELP without a valid metric name"),
        },
        Some("TYPE") => match (words.next(), words.next(), words.next()) {
            (Some(name), Some(kind), None)
                if valid_name(name)
                    && matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) =>
            {
                Ok(())
            }
            _ => Err("TYPE must be `# TYPE <name> <counter|gauge|histogram|summary|untyped>`"),
        },
        _ => Ok(()),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    valid_name(name) && !name.contains(':')
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("invalid metric name");
    }
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (BTreeMap::new(), &line[name_end..])
    };
    let rest = rest
        .strip_prefix(' ')
        .ok_or("a space must precede the value")?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().ok_or("missing value")?)?;
    if let Some(timestamp) = parts.next()
        && timestamp.parse::<i64>().is_err()
    {
        return Err("the timestamp must be an integer");
    }
    if parts.next().is_some() {
        return Err("unexpected text after the timestamp");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",…}` and returns the labels and the text after `}`.
fn parse_labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), &'static str> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label needs `=`")?;
        let key = &rest[..eq];
        if !valid_label_name(key) {
            return Err("invalid label name");
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("a label value must be quoted");
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    _ => return Err("invalid escape in a label value"),
                },
                '\n' => return Err("raw newline in a label value"),
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        if labels.insert(key.to_owned(), value).is_some() {
            return Err("repeated label");
        }
        rest = &rest[end..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels must be separated by `,` and closed by `}`");
        }
    }
}

fn parse_value(raw: &str) -> Result<f64, &'static str> {
    match raw {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => raw.parse::<f64>().map_err(|_| "the value is not a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_and_comments() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{k=\"v\",x=\"q\\\"\\\\\"} 3\n\
                    b 1.5 1700000000\nc_bucket{le=\"+Inf\"} 2\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.0.len(), 3);
        assert_eq!(samples.sum("a_total", &[("k", "v")]), Some(3.0));
        assert_eq!(samples.0[0].labels["x"], "q\"\\");
        assert_eq!(samples.sum("b", &[]), Some(1.5));
        assert_eq!(samples.sum("a_total", &[("k", "w")]), None);
        assert_eq!(samples.sum("c_bucket", &[("le", "+Inf")]), Some(2.0));
    }

    #[test]
    fn refuses_malformed_lines() {
        for bad in [
            "1abc 2",
            "a{k=v} 1",
            "a{k=\"v\" 1",
            "a{k=\"v\"} one",
            "a",
            "a{k=\"v\"}1",
            "# TYPE a nonsense",
            "a{k=\"v\",k=\"w\"} 1",
            "a 1 2 3",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
