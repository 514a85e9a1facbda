//! COMMAND DOCS: turns each command's argument syntax (Redis's help
//! notation) into the structured argument maps Redis 7 returns, which
//! redis-cli uses for its as-you-type hints.

use crate::resp::Reply;

use super::spec::CommandSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Key,
    Pattern,
    Integer,
    UnixTime,
    String,
    PureToken,
    OneOf(Vec<Arg>),
    Block(Vec<Arg>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Arg {
    name: String,
    kind: Kind,
    token: Option<String>,
    optional: bool,
    multiple: bool,
}

impl Arg {
    fn named(word: &str) -> Self {
        let (name, multiple) = split_repeat(word);
        let kind = match name {
            "key" | "newkey" | "source" | "destination" => Kind::Key,
            "pattern" => Kind::Pattern,
            n if n.starts_with("unix-time") => Kind::UnixTime,
            "seconds" | "milliseconds" | "index" | "start" | "end" | "offset" | "count"
            | "decrement" | "cursor" | "protover" | "destination-db" => Kind::Integer,
            _ => Kind::String,
        };
        Self {
            name: name.to_string(),
            kind,
            token: None,
            optional: false,
            multiple,
        }
    }

    fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Key => "key",
            Kind::Pattern => "pattern",
            Kind::Integer => "integer",
            Kind::UnixTime => "unix-time",
            Kind::String => "string",
            Kind::PureToken => "pure-token",
            Kind::OneOf(_) => "oneof",
            Kind::Block(_) => "block",
        }
    }
}

fn split_repeat(word: &str) -> (&str, bool) {
    match word.strip_suffix("...") {
        Some(name) => (name, true),
        None => (word, false),
    }
}

fn is_token(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_uppercase()) && !word.chars().any(|c| c.is_ascii_lowercase())
}

/// Splits the syntax into brackets, bars and words (`)...` stays whole).
fn lex(syntax: &str) -> Vec<String> {
    let spaced = syntax
        .replace('[', " [ ")
        .replace(']', " ] ")
        .replace('(', " ( ")
        .replace(")...", " )... ")
        .replace(") ", " ) ")
        .replace('|', " | ");
    spaced.split_whitespace().map(str::to_string).collect()
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Items up to a closing bracket or bar (not consumed).
    fn sequence(&mut self) -> Vec<Arg> {
        let mut items = Vec::new();
        while let Some(t) = self.peek() {
            if t == "]" || t.starts_with(')') || t == "|" {
                break;
            }
            if let Some(item) = self.item() {
                items.push(item);
            }
        }
        items
    }

    fn item(&mut self) -> Option<Arg> {
        let t = self.next()?;
        match t.as_str() {
            "[" => {
                let mut alternatives = vec![self.sequence()];
                while self.peek() == Some("|") {
                    self.pos += 1;
                    alternatives.push(self.sequence());
                }
                self.pos += 1; // ']'
                let mut arg = if alternatives.len() == 1 {
                    group(alternatives.remove(0))
                } else {
                    let choices: Vec<Arg> = alternatives.into_iter().map(group).collect();
                    Arg {
                        name: choices
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join("-or-"),
                        kind: Kind::OneOf(choices),
                        token: None,
                        optional: false,
                        multiple: false,
                    }
                };
                arg.optional = true;
                Some(arg)
            }
            "(" => {
                let items = self.sequence();
                let close = self.next().unwrap_or_default();
                let mut arg = group(items);
                arg.multiple = close == ")...";
                Some(arg)
            }
            word if is_token(word) => {
                let takes_value = self.peek().is_some_and(|next| {
                    !is_token(next)
                        && !matches!(next, "[" | "]" | "(" | "|")
                        && !next.starts_with(')')
                });
                if takes_value {
                    let value = self.next().unwrap_or_default();
                    let mut arg = Arg::named(&value);
                    arg.token = Some(word.to_string());
                    Some(arg)
                } else {
                    Some(Arg {
                        name: word.to_ascii_lowercase(),
                        kind: Kind::PureToken,
                        token: Some(word.to_string()),
                        optional: false,
                        multiple: false,
                    })
                }
            }
            word => Some(Arg::named(word)),
        }
    }
}

/// One argument as is, several as a block.
fn group(mut items: Vec<Arg>) -> Arg {
    if items.len() == 1 {
        return items.remove(0);
    }
    Arg {
        name: items.first().map(|a| a.name.clone()).unwrap_or_default(),
        kind: Kind::Block(items),
        token: None,
        optional: false,
        multiple: false,
    }
}

fn parse(syntax: &str) -> Vec<Arg> {
    let mut parser = Parser {
        tokens: lex(syntax),
        pos: 0,
    };
    let mut out = Vec::new();
    while parser.peek().is_some() {
        out.extend(parser.sequence());
        // Skip a stray closer so malformed syntax cannot loop forever.
        if parser.peek().is_some() {
            parser.pos += 1;
        }
    }
    out
}

fn write_arg(reply: &mut Reply, arg: &Arg) {
    let subargs = match &arg.kind {
        Kind::OneOf(a) | Kind::Block(a) => Some(a),
        _ => None,
    };
    let flags: Vec<&str> = [("optional", arg.optional), ("multiple", arg.multiple)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| *f)
        .collect();
    let fields = 2
        + usize::from(arg.token.is_some())
        + usize::from(!flags.is_empty())
        + usize::from(subargs.is_some());
    reply.map(fields);
    reply.bulk(b"name");
    reply.bulk(arg.name.as_bytes());
    reply.bulk(b"type");
    reply.bulk(arg.type_name().as_bytes());
    if let Some(token) = &arg.token {
        reply.bulk(b"token");
        reply.bulk(token.as_bytes());
    }
    if !flags.is_empty() {
        reply.bulk(b"flags");
        reply.set(flags.len());
        for f in flags {
            reply.simple(f);
        }
    }
    if let Some(subargs) = subargs {
        reply.bulk(b"arguments");
        reply.array(subargs.len());
        for a in subargs {
            write_arg(reply, a);
        }
    }
}

/// One `name => {summary, since, group, arguments}` pair of COMMAND DOCS.
pub fn write_docs(reply: &mut Reply, c: &CommandSpec) {
    let args = parse(c.syntax);
    reply.bulk(c.name.as_bytes());
    reply.map(3 + usize::from(!args.is_empty()));
    reply.bulk(b"summary");
    reply.bulk(c.summary.as_bytes());
    reply.bulk(b"since");
    reply.bulk(c.since.as_bytes());
    reply.bulk(b"group");
    reply.bulk(c.group.as_bytes());
    if !args.is_empty() {
        reply.bulk(b"arguments");
        reply.array(args.len());
        for a in &args {
            write_arg(reply, a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders arguments back in help notation, as redis-cli does for hints.
    fn render(args: &[Arg]) -> String {
        args.iter().map(render_one).collect::<Vec<_>>().join(" ")
    }

    fn render_one(a: &Arg) -> String {
        let mut s = match &a.kind {
            Kind::PureToken => a.token.clone().unwrap_or_default(),
            Kind::OneOf(c) => c.iter().map(render_one).collect::<Vec<_>>().join("|"),
            Kind::Block(b) => render(b),
            _ => match &a.token {
                Some(t) => format!("{t} {}", a.name),
                None => a.name.clone(),
            },
        };
        if a.multiple {
            s = format!("{s} [{s} ...]");
        }
        if a.optional {
            s = format!("[{s}]");
        }
        s
    }

    #[test]
    fn syntax_round_trips_to_redis_help_notation() {
        let cases = [
            (
                "key value [NX|XX] [GET] [EX seconds|PX milliseconds|KEEPTTL]",
                "key value [NX|XX] [GET] [EX seconds|PX milliseconds|KEEPTTL]",
            ),
            ("key...", "key [key ...]"),
            ("(key value)...", "key value [key value ...]"),
            (
                "cursor [MATCH pattern] [COUNT count]",
                "cursor [MATCH pattern] [COUNT count]",
            ),
            ("[username] password", "[username] password"),
            ("", ""),
        ];
        for (syntax, rendered) in cases {
            assert_eq!(render(&parse(syntax)), rendered, "{syntax}");
        }
    }

    #[test]
    fn every_command_syntax_parses() {
        for c in super::super::COMMANDS.iter() {
            let args = parse(c.syntax);
            assert_eq!(args.is_empty(), c.syntax.is_empty(), "{}", c.name);
            let mut reply = Reply::default();
            write_docs(&mut reply, c);
            assert!(!reply.buf.is_empty());
        }
    }
}
