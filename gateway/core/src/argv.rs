//! `{name}` substitution in a kernelspec's `argv`, as Jupyter does it: every `{NAME}` whose name
//! is made of ASCII letters, digits and `_` and is known is replaced by its value; anything else
//! (unknown names, other characters, unbalanced braces) is left exactly as written.

/// Substitutes the known `{name}` placeholders of `arg`.
pub fn substitute(arg: &str, value_of: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let closed = after[name_len..].starts_with('}');
        match (closed && !name.is_empty())
            .then(|| value_of(name))
            .flatten()
        {
            Some(value) => {
                out.push_str(&value);
                rest = &after[name_len + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let known = |n: &str| match n {
            "connection_file" => Some("/run/k.json".to_owned()),
            "kernel_id" => Some("abc".to_owned()),
            "empty" => Some(String::new()),
            _ => None,
        };
        for (input, expected) in [
            ("{connection_file}", "/run/k.json"),
            ("-f={connection_file}", "-f=/run/k.json"),
            ("{kernel_id}-{kernel_id}", "abc-abc"),
            ("{unknown}", "{unknown}"),
            ("{kernel-id}", "{kernel-id}"),
            ("{{kernel_id}}", "{abc}"),
            ("{kernel_id", "{kernel_id"),
            ("{}", "{}"),
            ("{empty}x", "x"),
            ("${KERNEL_ID}", "${KERNEL_ID}"),
            ("plain", "plain"),
            ("ü{kernel_id}ü", "üabcü"),
        ] {
            assert_eq!(substitute(input, &known), expected, "{input}");
        }
    }
}
