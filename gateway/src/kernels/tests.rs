use super::*;

#[test]
fn users_as_getpass_finds_them() {
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(process_user(&env(&[("USER", "u"), ("LOGNAME", "l")])), "l");
    assert_eq!(process_user(&env(&[("LOGNAME", ""), ("USER", "u")])), "u");
    let passwd = "root:x:0:0:root:/root:/bin/sh\njovyan:x:1000:100::/home/jovyan:/bin/bash\n";
    assert_eq!(passwd_name(passwd, 1000).as_deref(), Some("jovyan"));
    assert_eq!(passwd_name(passwd, 0).as_deref(), Some("root"));
    assert_eq!(passwd_name(passwd, 7), None);
}

#[test]
fn alternate_sigint_names() {
    use crate::comm::signal_number;
    assert_eq!(signal_number("SIGUSR2"), Some(12));
    assert_eq!(signal_number("usr1"), Some(10));
    assert_eq!(signal_number("2"), Some(2));
    assert_eq!(signal_number("SIGNOPE"), None);
}
