//! The part of PyYAML 6's `yaml.dump` that upstream's `yaml_safe` filter relies on, reproduced
//! byte for byte: a root string forced into double quotes, a root plain scalar (with its `...`
//! document end marker), and flow-style collections with sorted keys, each at `width=10000`
//! and without `allow_unicode` (every non-ASCII character is escaped).

use std::sync::LazyLock;

use regex::Regex;

use super::python;

const BEST_WIDTH: usize = 10000;
const BEST_INDENT: usize = 2;

/// A node as PyYAML's representer builds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// A `str`: plain only when YAML 1.1's implicit resolvers would read it back as a string.
    Str(String),
    /// Any other scalar (`null`, `true`, `1000`, `3.14`), already in its canonical text.
    Other(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// PyYAML's `represent_float`.
    pub(crate) fn float(f: f64) -> Self {
        let text = if f.is_nan() {
            ".nan".to_owned()
        } else if f.is_infinite() {
            if f > 0.0 { ".inf" } else { "-.inf" }.to_owned()
        } else {
            let repr = python::float_repr(f).to_lowercase();
            if !repr.contains('.') && repr.contains('e') {
                repr.replacen('e', ".0e", 1)
            } else {
                repr
            }
        };
        Self::Other(text)
    }
}

static IMPLICIT: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
        r"^(?:<<)$",
        r"^(?:~|null|Null|NULL|)$",
        r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
        r"^(?:=)$",
        r"^(?:!|&|\*)$",
    ]
    .iter()
    .map(|re| Regex::new(re).expect("the resolver patterns compile"))
    .collect()
});

/// Whether a plain scalar with this text would load as something other than a string.
fn resolves_implicitly(s: &str) -> bool {
    IMPLICIT.iter().any(|re| re.is_match(s))
}

const BREAKS: [char; 4] = ['\n', '\u{85}', '\u{2028}', '\u{2029}'];

fn is_space_or_break(c: char) -> bool {
    matches!(c, '\0' | ' ' | '\t' | '\r') || BREAKS.contains(&c)
}

#[derive(Debug, Clone, Copy)]
struct Analysis {
    empty: bool,
    multiline: bool,
    allow_flow_plain: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

/// Whether `ch` is a flow indicator and whether a block indicator where it stands (first in the
/// scalar or not, after and before white space or not).
fn indicators(ch: char, first: bool, preceded_by_ws: bool, followed_by_ws: bool) -> (bool, bool) {
    match ch {
        _ if first && "#,[]{}&*!|>'\"%@`".contains(ch) => (true, true),
        '?' if first => (true, followed_by_ws),
        '-' if first && followed_by_ws => (true, true),
        ',' | '?' | '[' | ']' | '{' | '}' if !first => (true, false),
        ':' => (true, followed_by_ws),
        '#' if !first && preceded_by_ws => (true, true),
        _ => (false, false),
    }
}

fn analyze(s: &[char]) -> Analysis {
    if s.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_flow_plain: false,
            allow_block_plain: true,
            allow_single_quoted: true,
        };
    }
    let text: String = s.iter().collect();
    let mut block_indicators = false;
    let mut flow_indicators = false;
    if text.starts_with("---") || text.starts_with("...") {
        block_indicators = true;
        flow_indicators = true;
    }
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);
    let mut preceded_by_ws = true;
    let mut followed_by_ws = s.len() == 1 || is_space_or_break(s[1]);
    let (mut previous_space, mut previous_break) = (false, false);
    for (index, &ch) in s.iter().enumerate() {
        let (flow, block) = indicators(ch, index == 0, preceded_by_ws, followed_by_ws);
        flow_indicators |= flow;
        block_indicators |= block;
        if BREAKS.contains(&ch) {
            line_breaks = true;
        }
        // Without allow_unicode, everything but printable ASCII and '\n' is special.
        if !(ch == '\n' || (' '..='~').contains(&ch)) {
            special = true;
        }
        if ch == ' ' {
            leading_space |= index == 0;
            trailing_space |= index == s.len() - 1;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if BREAKS.contains(&ch) {
            leading_break |= index == 0;
            trailing_break |= index == s.len() - 1;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_ws = is_space_or_break(ch);
        followed_by_ws = index + 2 >= s.len() || is_space_or_break(s[index + 2]);
    }
    let mut a = Analysis {
        empty: false,
        multiline: line_breaks,
        allow_flow_plain: true,
        allow_block_plain: true,
        allow_single_quoted: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if break_space {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if space_break || special {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if line_breaks {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if flow_indicators {
        a.allow_flow_plain = false;
    }
    if block_indicators {
        a.allow_block_plain = false;
    }
    a
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
}

#[derive(Debug, Clone, Copy, Default)]
struct Context {
    root: bool,
    simple_key: bool,
}

struct Emitter {
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
    open_ended: bool,
    indent: Option<usize>,
    indents: Vec<Option<usize>>,
    flow_level: usize,
    /// `default_style='"'`: every scalar double-quoted.
    force_double: bool,
}

impl Emitter {
    fn new(force_double: bool) -> Self {
        Self {
            out: String::new(),
            column: 0,
            whitespace: true,
            indention: true,
            open_ended: false,
            indent: None,
            indents: Vec::new(),
            flow_level: 0,
            force_double,
        }
    }

    fn write(&mut self, data: &str) {
        self.column += data.chars().count();
        self.out.push_str(data);
    }

    fn write_indicator(&mut self, indicator: &str, need_ws: bool, whitespace: bool) {
        if !self.whitespace && need_ws {
            self.write(" ");
        }
        self.write(indicator);
        self.whitespace = whitespace;
        self.indention = false;
        self.open_ended = false;
    }

    fn write_indent(&mut self) {
        let indent = self.indent.unwrap_or(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.write_line_break();
        }
        if self.column < indent {
            self.whitespace = true;
            let pad = " ".repeat(indent - self.column);
            self.write(&pad);
        }
    }

    fn write_line_break(&mut self) {
        self.whitespace = true;
        self.indention = true;
        self.column = 0;
        self.out.push('\n');
    }

    fn increase_indent(&mut self, flow: bool) {
        self.indents.push(self.indent);
        self.indent = Some(match self.indent {
            None if flow => BEST_INDENT,
            None => 0,
            Some(i) => i + BEST_INDENT,
        });
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().flatten();
    }

    fn document(mut self, node: &Node) -> String {
        self.node(
            node,
            Context {
                root: true,
                simple_key: false,
            },
        );
        self.write_indent();
        if self.open_ended {
            self.write_indicator("...", true, false);
            self.write_indent();
        }
        self.out
    }

    fn node(&mut self, node: &Node, ctx: Context) {
        match node {
            Node::Str(s) => self.scalar(s, !resolves_implicitly(s), ctx),
            Node::Other(s) => self.scalar(s, true, ctx),
            Node::Seq(items) => {
                self.write_indicator("[", true, true);
                self.flow_level += 1;
                self.increase_indent(true);
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.write_indicator(",", false, false);
                    }
                    if self.column > BEST_WIDTH {
                        self.write_indent();
                    }
                    self.node(item, Context::default());
                }
                self.pop_indent();
                self.flow_level -= 1;
                self.write_indicator("]", false, false);
            }
            Node::Map(entries) => {
                self.write_indicator("{", true, true);
                self.flow_level += 1;
                self.increase_indent(true);
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        self.write_indicator(",", false, false);
                    }
                    if self.column > BEST_WIDTH {
                        self.write_indent();
                    }
                    if simple_key(key) {
                        self.node(
                            key,
                            Context {
                                root: false,
                                simple_key: true,
                            },
                        );
                        self.write_indicator(":", false, false);
                    } else {
                        self.write_indicator("?", true, false);
                        self.node(key, Context::default());
                        if self.column > BEST_WIDTH {
                            self.write_indent();
                        }
                        self.write_indicator(":", true, false);
                    }
                    self.node(value, Context::default());
                }
                self.pop_indent();
                self.flow_level -= 1;
                self.write_indicator("}", false, false);
            }
        }
    }

    fn scalar(&mut self, text: &str, plain_implicit: bool, ctx: Context) {
        let chars: Vec<char> = text.chars().collect();
        let a = analyze(&chars);
        let style = if self.force_double {
            Style::Double
        } else if plain_implicit
            && !(ctx.simple_key && (a.empty || a.multiline))
            && ((self.flow_level > 0 && a.allow_flow_plain)
                || (self.flow_level == 0 && a.allow_block_plain))
        {
            Style::Plain
        } else if a.allow_single_quoted && !(ctx.simple_key && a.multiline) {
            Style::Single
        } else {
            Style::Double
        };
        self.increase_indent(true);
        let split = !ctx.simple_key;
        match style {
            Style::Plain => self.write_plain(&chars, split, ctx.root),
            Style::Single => self.write_single_quoted(&chars, split),
            Style::Double => self.write_double_quoted(&chars, split),
        }
        self.pop_indent();
    }

    fn write_plain(&mut self, text: &[char], split: bool, root: bool) {
        if root {
            self.open_ended = true;
        }
        if text.is_empty() {
            return;
        }
        if !self.whitespace {
            self.write(" ");
        }
        self.whitespace = false;
        self.indention = false;
        // Plain scalars never hold line breaks (the analysis forbids it).
        let mut spaces = false;
        let mut start = 0;
        for end in 0..=text.len() {
            let ch = text.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split {
                        self.write_indent();
                        self.whitespace = false;
                        self.indention = false;
                    } else {
                        let data: String = text[start..end].iter().collect();
                        self.write(&data);
                    }
                    start = end;
                }
            } else if ch.is_none() || ch == Some(' ') {
                let data: String = text[start..end].iter().collect();
                self.write(&data);
                start = end;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
            }
        }
    }

    fn write_single_quoted(&mut self, text: &[char], split: bool) {
        self.write_indicator("'", true, false);
        let (mut spaces, mut breaks) = (false, false);
        let mut start = 0;
        for end in 0..=text.len() {
            let ch = text.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end
                        && self.column > BEST_WIDTH
                        && split
                        && start != 0
                        && end != text.len()
                    {
                        self.write_indent();
                    } else {
                        let data: String = text[start..end].iter().collect();
                        self.write(&data);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(|c| BREAKS.contains(&c)) {
                    if text[start] == '\n' {
                        self.write_line_break();
                    }
                    // Only '\n' reaches here: other breaks are non-ASCII, hence double-quoted.
                    for _ in start..end {
                        self.write_line_break();
                    }
                    self.write_indent();
                    start = end;
                }
            } else if (ch.is_none()
                || ch.is_some_and(|c| c == ' ' || c == '\'' || BREAKS.contains(&c)))
                && start < end
            {
                let data: String = text[start..end].iter().collect();
                self.write(&data);
                start = end;
            }
            if ch == Some('\'') {
                self.write("''");
                start = end + 1;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = BREAKS.contains(&c);
            }
        }
        self.write_indicator("'", false, false);
    }

    fn write_double_quoted(&mut self, text: &[char], split: bool) {
        self.write_indicator("\"", true, false);
        let mut start = 0;
        for end in 0..=text.len() {
            let ch = text.get(end).copied();
            let escape = match ch {
                None => true,
                Some(c) => matches!(c, '"' | '\\') || !(' '..='~').contains(&c),
            };
            if escape {
                if start < end {
                    let data: String = text[start..end].iter().collect();
                    self.write(&data);
                    start = end;
                }
                if let Some(c) = ch {
                    let data = match c {
                        '\0' => "\\0".to_owned(),
                        '\u{7}' => "\\a".to_owned(),
                        '\u{8}' => "\\b".to_owned(),
                        '\t' => "\\t".to_owned(),
                        '\n' => "\\n".to_owned(),
                        '\u{b}' => "\\v".to_owned(),
                        '\u{c}' => "\\f".to_owned(),
                        '\r' => "\\r".to_owned(),
                        '\u{1b}' => "\\e".to_owned(),
                        '"' => "\\\"".to_owned(),
                        '\\' => "\\\\".to_owned(),
                        '\u{85}' => "\\N".to_owned(),
                        '\u{a0}' => "\\_".to_owned(),
                        '\u{2028}' => "\\L".to_owned(),
                        '\u{2029}' => "\\P".to_owned(),
                        c if (c as u32) <= 0xff => format!("\\x{:02X}", c as u32),
                        c if (c as u32) <= 0xffff => format!("\\u{:04X}", c as u32),
                        c => format!("\\U{:08X}", c as u32),
                    };
                    self.write(&data);
                    start = end + 1;
                }
            }
            if 0 < end
                && end + 1 < text.len()
                && (ch == Some(' ') || start >= end)
                && self.column as isize + end as isize - start as isize > BEST_WIDTH as isize
                && split
            {
                // Python's text[start:end] is empty when an escape put start past end.
                let mut data: String = text[start.min(end)..end].iter().collect();
                data.push('\\');
                if start < end {
                    start = end;
                }
                self.write(&data);
                self.write_indent();
                self.whitespace = false;
                self.indention = false;
                if text[start] == ' ' {
                    self.write("\\");
                }
            }
        }
        self.write_indicator("\"", false, false);
    }
}

fn simple_key(key: &Node) -> bool {
    match key {
        Node::Str(s) | Node::Other(s) => {
            let n = s.chars().count();
            n > 0 && n < 128 && !s.contains(BREAKS)
        }
        Node::Seq(items) => items.is_empty(),
        Node::Map(entries) => entries.is_empty(),
    }
}

/// `yaml.dump(s, default_style='"', width=10000).strip()`.
pub(crate) fn dump_double_quoted(s: &str) -> String {
    let out = Emitter::new(true).document(&Node::Str(s.to_owned()));
    out.trim_matches(python::is_space).to_owned()
}

/// `yaml.dump(x, default_flow_style=True, width=10000).strip()` for a list or dict.
pub(crate) fn dump_flow(node: &Node) -> String {
    let out = Emitter::new(false).document(node);
    out.trim_matches(python::is_space).to_owned()
}

/// `yaml.dump(x, width=10000).replace("\n...", "").strip()` for `None`, bools and numbers.
pub(crate) fn dump_scalar(node: &Node) -> String {
    let out = Emitter::new(false).document(node);
    out.replace("\n...", "")
        .trim_matches(python::is_space)
        .to_owned()
}

#[cfg(test)]
mod tests;
