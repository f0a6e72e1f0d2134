//! The one output line of a measurement: `key=value` fields separated by
//! spaces, the caller's `--tag`s first. Values never contain spaces, so the
//! shell script can append lines to a file and `report` can read them back
//! without a serialisation library.

use std::fmt::Display;

/// What every measuring subcommand accepts to label its line.
#[derive(Debug, clap::Args)]
pub struct Tags {
    /// A `key=value` field copied to the front of the output line (server,
    /// child, run...). Repeatable.
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<String>,
}

fn parse_tag(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !text.contains(char::is_whitespace) && !v.is_empty() => {
            Ok(text.to_owned())
        }
        _ => Err(format!("a tag is key=value without spaces, not {text:?}")),
    }
}

/// A line being built.
#[derive(Debug, Default)]
pub struct Line {
    fields: Vec<String>,
}

impl Line {
    pub fn new(tags: &Tags) -> Self {
        Self {
            fields: tags.tags.clone(),
        }
    }

    /// Adds `key=value`; floats get a fixed number of decimals by the caller.
    pub fn field(&mut self, key: &str, value: impl Display) -> &mut Self {
        let value = value.to_string();
        debug_assert!(!value.contains(char::is_whitespace), "{key}={value:?}");
        self.fields.push(format!("{key}={value}"));
        self
    }

    /// Prints the line on stdout.
    pub fn print(&self) {
        println!("{}", self.fields.join(" "));
    }
}

/// Splits a line back into its fields; words that are not `key=value` are
/// ignored (so a stray message cannot break the report).
pub fn parse(text: &str) -> Vec<(&str, &str)> {
    text.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let tags = Tags {
            tags: vec!["server=xinetd".into()],
        };
        let mut line = Line::new(&tags);
        line.field("rate", format!("{:.1}", 12.25))
            .field("errors", 0);
        assert_eq!(line.fields.join(" "), "server=xinetd rate=12.2 errors=0");
        assert_eq!(
            parse("server=xinetd rate=12.2 junk errors=0"),
            [("server", "xinetd"), ("rate", "12.2"), ("errors", "0")]
        );
    }

    #[test]
    fn tags_are_checked() {
        assert!(parse_tag("server=x").is_ok());
        assert!(parse_tag("server").is_err());
        assert!(parse_tag("a=b c").is_err());
        assert!(parse_tag("=b").is_err());
    }
}
