use super::*;

fn s(v: &str) -> Node {
    Node::Str(v.to_owned())
}

#[test]
fn double_quoted_strings() {
    for (input, expected) in [
        ("/home/jovyan", r#""/home/jovyan""#),
        ("", r#""""#),
        ("a\nb: c", r#""a\nb: c""#),
        ("say \"hi\"\\", r#""say \"hi\"\\""#),
        ("---\n...", r#""---\n...""#),
        ("tab\there", r#""tab\there""#),
        (
            "é\u{a0}\u{85}\u{2028}\u{feff}\u{1F600}\u{7f}",
            r#""\xE9\_\N\L\uFEFF\U0001F600\x7F""#,
        ),
        (
            "\0\u{7}\u{8}\u{b}\u{c}\r\u{1b}\u{1}",
            r#""\0\a\b\v\f\r\e\x01""#,
        ),
    ] {
        assert_eq!(dump_double_quoted(input), expected, "{input:?}");
    }
}

#[test]
fn long_double_quoted_strings_fold_like_pyyaml() {
    // Python: yaml.dump("a" * 10005 + " b c", default_style='"', width=10000).strip()
    let long = format!("{} b c", "a".repeat(10005));
    assert_eq!(
        dump_double_quoted(&long),
        format!("\"{}\\\n  \\ b c\"", "a".repeat(10005))
    );
}

#[test]
fn escaped_strings_fold_between_escapes() {
    // Python: yaml.dump("é" * 2600, default_style='"', width=10000).strip()
    let out = dump_double_quoted(&"é".repeat(2600));
    let lines: Vec<&str> = out.split('\n').collect();
    assert_eq!(
        lines.iter().map(|l| l.len()).collect::<Vec<_>>(),
        [10006, 399]
    );
    assert!(lines[0].ends_with("\\xE9\\xE9\\"));
    assert!(lines[1].starts_with("  \\xE9"));
}

#[test]
fn flow_collections() {
    let map = Node::Map(vec![
        (
            s("a"),
            Node::Seq(vec![
                Node::Other("1".into()),
                s("1"),
                s("yes"),
                s(""),
                Node::Other("null".into()),
                Node::Other("true".into()),
                Node::float(1.5),
                s("x y"),
                s("it's"),
                s("é"),
                s("-x"),
                s(" lead"),
                s("a: b"),
            ]),
        ),
        (s("b"), s("a\nb")),
        (s(&"c".repeat(130)), Node::Other("1".into())),
    ]);
    assert_eq!(
        dump_flow(&map),
        format!(
            "{{a: [1, '1', 'yes', '', null, true, 1.5, x y, it's, \"\\xE9\", -x, ' lead', 'a: b'], b: 'a\n\n    b', ? {} : 1}}",
            "c".repeat(130)
        )
    );
    assert_eq!(
        dump_flow(&Node::Map(vec![
            (s("mountPath"), s("/data")),
            (s("name"), s("data"))
        ])),
        "{mountPath: /data, name: data}"
    );
    assert_eq!(dump_flow(&Node::Seq(vec![])), "[]");
    assert_eq!(dump_flow(&Node::Map(vec![])), "{}");
}

#[test]
fn root_scalars() {
    assert_eq!(dump_scalar(&Node::Other("1000".into())), "1000");
    assert_eq!(dump_scalar(&Node::Other("null".into())), "null");
    assert_eq!(dump_scalar(&Node::float(1e16)), "1.0e+16");
    assert_eq!(dump_scalar(&Node::float(f64::NAN)), ".nan");
}

#[test]
fn implicit_resolution() {
    for plain_is_not_string in [
        "yes",
        "Off",
        "1",
        "-1_000",
        "0x1F",
        "0b101",
        "017",
        "1:30",
        "1.5",
        ".5",
        "1.0e+16",
        "-.inf",
        ".NaN",
        "2001-12-14",
        "2001-12-14 21:59:43.10 -5",
        "~",
        "null",
        "",
        "<<",
        "=",
        "*",
        "1_0.5",
    ] {
        assert!(
            resolves_implicitly(plain_is_not_string),
            "{plain_is_not_string:?}"
        );
    }
    for string in [
        "y", "n", "1e3", "0o17", "1.2.3", "nulls", "x", "1:60", "2001-1-1",
    ] {
        assert!(!resolves_implicitly(string), "{string:?}");
    }
}

#[test]
fn indicator_characters_quote_like_pyyaml() {
    // Python: yaml.dump(items, default_flow_style=True, width=10000).strip()
    let items = [
        "?x", "? x", "?", "-x", "- x", "-", ":x", ": x", "a:b", "a: b", "a:", "a#b", "a #b", "#a",
        ",x", "x,y", "x?y", "[x", "x[y", "x]", "{x", "x}y", "&x", "x&y", "*x", "!x", "|x", "x|y",
        ">x", "x>", "%x", "@x", "`x", "x`", "'x", "x's", "\"x", "x\"y",
    ];
    assert_eq!(
        dump_flow(&Node::Seq(items.into_iter().map(s).collect())),
        r#"['?x', '? x', '?', -x, '- x', '-', ':x', ': x', 'a:b', 'a: b', 'a:', a#b, 'a #b', '#a', ',x', 'x,y', 'x?y', '[x', 'x[y', 'x]', '{x', 'x}y', '&x', x&y, '*x', '!x', '|x', x|y, '>x', x>, '%x', '@x', '`x', x`, '''x', x's, '"x', x"y]"#
    );
}
