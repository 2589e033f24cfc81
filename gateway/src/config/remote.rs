//! The variables of the kernels' remote side: the response listener (where launchers send
//! connection info) and the comm port (interrupts and shutdowns through the in-pod launcher).

use super::*;

/// The response listener's and the comm port's variables (upstream's names and defaults).
pub(super) fn check_remote(c: &mut Checker, args: &Args) -> (ResponseSettings, CommSettings) {
    let defaults = ResponseSettings::default();
    let port = c.parse("EG_RESPONSE_PORT", &args.response_port, |raw| {
        raw.trim()
            .parse::<u16>()
            .map_err(|_| "expected a port number (0-65535)".to_owned())
    });
    let port_retries = c.parse(
        "EG_RESPONSE_PORT_RETRIES",
        &args.response_port_retries,
        |raw| {
            raw.trim()
                .parse::<u16>()
                .map_err(|_| "expected a whole number (0-65535)".to_owned())
        },
    );
    let ip = match args.response_ip.as_deref().map(str::trim) {
        Some(raw) if !raw.is_empty() => c.parse("EG_RESPONSE_IP", raw, |raw| {
            raw.parse::<Ipv4Addr>().map_err(|_| {
                "expected an IPv4 address (launchers split the response address at ':')".to_owned()
            })
        }),
        _ => None,
    };
    let addr_any = c.parse("EG_RESPONSE_ADDR_ANY", &args.response_addr_any, parse_bool);
    let prohibited = c.parse(
        "EG_PROHIBITED_LOCAL_IPS",
        args.prohibited_local_ips.as_deref().unwrap_or_default(),
        ProhibitedIps::parse,
    );
    let timeout = c.parse(
        "EG_SOCKET_TIMEOUT",
        &args.socket_timeout,
        parse_fractional_seconds,
    );
    let alternate_sigint = match args.alternate_sigint.as_deref().map(str::trim) {
        Some(raw) if !raw.is_empty() => c.parse("EG_ALTERNATE_SIGINT", raw, |raw| {
            signal_number(raw).map(Some).ok_or_else(|| {
                "expected a signal name such as SIGUSR2 (or a number 1-64)".to_owned()
            })
        }),
        _ => None,
    }
    .flatten();
    let response = ResponseSettings {
        ip,
        addr_any: addr_any.unwrap_or(false),
        port: port.unwrap_or(defaults.port),
        port_retries: port_retries.unwrap_or(defaults.port_retries),
        prohibited: prohibited.unwrap_or_default(),
        ..defaults
    };
    let comm = CommSettings {
        timeout: timeout.unwrap_or(crate::comm::DEFAULT_CONNECT_TIMEOUT),
        alternate_sigint,
    };
    (response, comm)
}
