//! The variables of the kernels' remote side: the response listener (where launchers send
//! connection info) and the comm port (interrupts and shutdowns through the in-pod launcher).

use super::*;

/// The response listener's and the comm port's variables (upstream's names and defaults).
pub(super) fn check_remote(c: &mut Checker, args: &Args) -> (ResponseSettings, CommSettings) {
    let defaults = ResponseSettings::default();
    let port = c.read(&args.response_port, parse_port);
    let port_retries = c.read(&args.response_port_retries, |raw| {
        parse_trimmed::<u16>(raw, "a whole number (0-65535)")
    });
    // These two are checked (and shown in errors) trimmed.
    let trimmed = |s: &Option<Setting>| s.as_ref().map(|s| Setting::new(s.var, s.raw.trim()));
    let ip = c
        .read_set(trimmed(&args.response_ip).as_ref(), |raw| {
            raw.parse::<Ipv4Addr>().map_err(|_| {
                "expected an IPv4 address (launchers split the response address at ':')".to_owned()
            })
        })
        .flatten();
    let addr_any = c.read(&args.response_addr_any, parse_bool);
    let prohibited = c.read_set(args.prohibited_local_ips.as_ref(), ProhibitedIps::parse);
    let timeout = c.read(&args.socket_timeout, parse_fractional_seconds);
    let alternate_sigint = c
        .read_set(trimmed(&args.alternate_sigint).as_ref(), |raw| {
            signal_number(raw).ok_or_else(|| {
                "expected a signal name such as SIGUSR2 (or a number 1-64)".to_owned()
            })
        })
        .flatten();
    let response = ResponseSettings {
        ip,
        addr_any: addr_any.unwrap_or(false),
        port: port.unwrap_or(defaults.port),
        port_retries: port_retries.unwrap_or(defaults.port_retries),
        prohibited: prohibited.flatten().unwrap_or_default(),
        ..defaults
    };
    let comm = CommSettings {
        timeout: timeout.unwrap_or(crate::comm::DEFAULT_CONNECT_TIMEOUT),
        alternate_sigint,
    };
    (response, comm)
}
