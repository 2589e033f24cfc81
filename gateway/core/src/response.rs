//! The connection-info payload remote kernel launchers send back to the gateway's response
//! address (eg-behaviour.md §4.2, §4.3).
//!
//! Version 1, what every current launcher sends: `base64(JSON {"version": 1, "key", "conn_info"})`
//! where `key` is the base64 of a 16-byte AES key encrypted with the gateway's RSA public key
//! (PKCS#1 v1.5; OAEP-SHA1 is accepted too) and `conn_info` the base64 of the connection JSON
//! encrypted with that AES key (AES-128-ECB, PKCS#7 padding).
//!
//! Version "0", from ancient launchers: `base64(AES-128-ECB(key = first 16 characters of the
//! kernel id, JSON + filler))`, without the kernel id inside; [`decode_legacy`] finds the id by
//! trial decryption over the pending kernel ids.
//!
//! Key generation needs randomness and lives in the gateway; here the key is only used.

use aes::{
    Aes128,
    cipher::{BlockModeDecrypt, KeyInit, block_padding::Pkcs7},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rsa::{Oaep, PrivateKey, PublicKey, pkcs8::EncodePublicKey};
use serde_json::{Map, Value};

/// Length of the AES key inside version-1 payloads (AES-128).
pub const AES_KEY_LEN: usize = 16;

/// The five ZeroMQ port fields every payload must carry, in the connection file's order.
pub const PORT_FIELDS: [&str; 5] = [
    "shell_port",
    "iopub_port",
    "stdin_port",
    "control_port",
    "hb_port",
];

/// A kernel's connection information as its launcher reported it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionPayload {
    /// The kernel the payload belongs to (routing key).
    pub kernel_id: String,
    pub shell_port: u16,
    pub iopub_port: u16,
    pub stdin_port: u16,
    pub control_port: u16,
    pub hb_port: u16,
    /// The launcher's signal/shutdown listener; `None` when absent or 0 (then interrupts cannot
    /// be delivered through it).
    pub comm_port: Option<u16>,
    /// What the kernel bound (usually `0.0.0.0`); callers substitute the pod's address.
    pub ip: Option<String>,
    /// The HMAC key (its UTF-8 bytes sign messages).
    pub key: String,
    /// `tcp` when absent.
    pub transport: String,
    /// `hmac-sha256` when absent.
    pub signature_scheme: String,
    /// Empty when absent.
    pub kernel_name: String,
    /// The launcher's process id; absent, or not an integer (ignored as upstream does): `None`.
    pub pid: Option<i64>,
    /// The launcher's process group; as `pid`.
    pub pgid: Option<i64>,
}

impl std::fmt::Debug for ConnectionPayload {
    // The HMAC key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPayload")
            .field("kernel_id", &self.kernel_id)
            .field("shell_port", &self.shell_port)
            .field("iopub_port", &self.iopub_port)
            .field("stdin_port", &self.stdin_port)
            .field("control_port", &self.control_port)
            .field("hb_port", &self.hb_port)
            .field("comm_port", &self.comm_port)
            .field("ip", &self.ip)
            .field("key", &"***")
            .field("transport", &self.transport)
            .field("signature_scheme", &self.signature_scheme)
            .field("kernel_name", &self.kernel_name)
            .field("pid", &self.pid)
            .field("pgid", &self.pgid)
            .finish()
    }
}

/// Why a payload was not accepted. Every variant names the field at fault ([`Self::field`]):
/// `payload` for the outer layers, `version`, `key`, `conn_info`, or a connection field.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{field}: not valid base64: {source}")]
    Base64 {
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{field}: not valid JSON: {source}")]
    Json {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{field}: missing")]
    Missing { field: &'static str },
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("version: {found} is not supported (expected 1)")]
    Version { found: String },
    #[error(
        "key: the AES key cannot be recovered with the gateway's RSA key (neither PKCS#1 v1.5 \
         nor OAEP-SHA1 yields 16 bytes): was the payload encrypted for another gateway?"
    )]
    Key,
    #[error(
        "conn_info: no valid PKCS#7 padding after AES-128-ECB decryption (corrupt, or encrypted \
         with another key than the one in `key`)"
    )]
    Padding,
}

impl PayloadError {
    /// The field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Base64 { field, .. }
            | Self::Json { field, .. }
            | Self::Missing { field }
            | Self::Invalid { field, .. } => field,
            Self::Version { .. } => "version",
            Self::Key => "key",
            Self::Padding => "conn_info",
        }
    }

    /// A short, fixed label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Base64 { .. } => "base64",
            Self::Json { .. } => "json",
            Self::Missing { .. } | Self::Invalid { .. } => "field",
            Self::Version { .. } => "version",
            Self::Key => "rsa_key",
            Self::Padding => "aes_padding",
        }
    }
}

/// The public key as launchers take it (`--public-key`, `{public_key}`): SubjectPublicKeyInfo
/// DER in standard base64, i.e. the body of a `PUBLIC KEY` PEM on one line (216 characters for
/// a 1024-bit key).
pub fn public_key_base64(key: &PublicKey) -> String {
    let der = key
        .to_public_key_der()
        .expect("an RSA public key always encodes as SubjectPublicKeyInfo");
    STANDARD.encode(der.as_bytes())
}

/// Decodes a version-1 payload (the bytes a launcher sent, up to EOF) with the gateway's key.
pub fn decode_payload(bytes: &[u8], key: &PrivateKey) -> Result<ConnectionPayload, PayloadError> {
    let outer = base64_field("payload", bytes)?;
    let outer: Value = serde_json::from_slice(&outer).map_err(|source| PayloadError::Json {
        field: "payload",
        source,
    })?;
    let Value::Object(outer) = outer else {
        return Err(invalid("payload", "expected a JSON object"));
    };
    match outer.get("version") {
        None | Some(Value::Null) => return Err(PayloadError::Missing { field: "version" }),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(other) => {
            return Err(PayloadError::Version {
                found: other.to_string(),
            });
        }
    }
    let encrypted_key = base64_field("key", string_field(&outer, "key")?.as_bytes())?;
    let conn_info = base64_field("conn_info", string_field(&outer, "conn_info")?.as_bytes())?;
    let info = decrypt_connection(key, &encrypted_key, &conn_info)?;
    parse_connection(info, None)
}

/// Decodes a legacy version-0 payload by trying each candidate kernel id's first 16 characters
/// as the AES key; the first candidate under which the payload reads as a JSON object wins and
/// becomes the payload's `kernel_id`. Candidates shorter than 16 bytes cannot be keys and are
/// skipped. `None` when no candidate fits (or the payload is not base64).
pub fn decode_legacy<'a>(
    bytes: &[u8],
    candidate_ids: impl IntoIterator<Item = &'a str>,
) -> Option<ConnectionPayload> {
    let body = base64_field("payload", bytes).ok()?;
    if body.is_empty() || body.len() % AES_KEY_LEN != 0 {
        return None;
    }
    candidate_ids.into_iter().find_map(|id| {
        let aes_key = id.as_bytes().get(..AES_KEY_LEN)?;
        let mut plain = body.clone();
        let dec = ecb::Decryptor::<Aes128>::new_from_slice(aes_key).ok()?;
        let plain = dec
            .decrypt_padded::<aes::cipher::block_padding::NoPadding>(&mut plain)
            .ok()?;
        let text = std::str::from_utf8(plain).ok()?;
        let end = text.rfind('}')?;
        let Ok(Value::Object(mut info)) = serde_json::from_str::<Value>(&text[..=end]) else {
            return None;
        };
        info.insert("kernel_id".to_owned(), Value::String(id.to_owned()));
        parse_connection(info, Some(id)).ok()
    })
}

/// The launchers' encoder (eg-behaviour.md §4.2), for tests and fake launchers: `plaintext`
/// (the connection JSON) under AES-128-ECB with `aes_key`, the key under PKCS#1 v1.5 for
/// `public`, wrapped as `base64({"version": 1, "key", "conn_info"})`.
#[cfg(any(test, feature = "encoder"))]
pub fn encode_payload<R: rsa::rand_core::TryCryptoRng + ?Sized>(
    public: &PublicKey,
    plaintext: &[u8],
    aes_key: &[u8; AES_KEY_LEN],
    rng: &mut R,
) -> Vec<u8> {
    use aes::cipher::BlockModeEncrypt;
    let conn_info = ecb::Encryptor::<Aes128>::new_from_slice(aes_key)
        .expect("16 bytes make an AES-128 key")
        .encrypt_padded_vec::<Pkcs7>(plaintext);
    let key = public
        .encrypt(rng, rsa::Pkcs1v15Encrypt, aes_key)
        .expect("16 bytes fit a PKCS#1 v1.5 block of any RSA key of 1024 bits or more");
    let outer = serde_json::json!({
        "version": 1,
        "key": STANDARD.encode(key),
        "conn_info": STANDARD.encode(conn_info),
    });
    STANDARD.encode(outer.to_string()).into_bytes()
}

/// Recovers the AES key (PKCS#1 v1.5 first, then OAEP-SHA1) and the connection JSON.
///
/// rsa 0.10 answers a PKCS#1 v1.5 ciphertext with bad padding by a synthetic message (implicit
/// rejection) instead of an error, so a v1.5 result counts only when it is 16 bytes long and
/// the connection JSON decrypts, unpads and parses with it.
fn decrypt_connection(
    key: &PrivateKey,
    encrypted_key: &[u8],
    conn_info: &[u8],
) -> Result<Map<String, Value>, PayloadError> {
    let mut v15_error = None;
    if let Ok(aes_key) = key.pkcs1v15_decrypt(encrypted_key)
        && aes_key.len() == AES_KEY_LEN
    {
        match decrypt_conn_info(&aes_key, conn_info) {
            Ok(info) => return Ok(info),
            Err(e) => v15_error = Some(e),
        }
    }
    match key.decrypt(Oaep::<sha1::Sha1>::new(), encrypted_key) {
        Ok(aes_key) if aes_key.len() == AES_KEY_LEN => decrypt_conn_info(&aes_key, conn_info),
        // OAEP's padding is checked: a wrong-length result is the launcher's mistake.
        Ok(aes_key) => Err(invalid(
            "key",
            format!(
                "decrypts to {} bytes, expected a {AES_KEY_LEN}-byte AES key",
                aes_key.len()
            ),
        )),
        Err(_) => Err(v15_error.unwrap_or(PayloadError::Key)),
    }
}

fn decrypt_conn_info(aes_key: &[u8], conn_info: &[u8]) -> Result<Map<String, Value>, PayloadError> {
    let dec = ecb::Decryptor::<Aes128>::new_from_slice(aes_key)
        .map_err(|_| invalid("key", "not a 16-byte AES key"))?;
    let plain = dec
        .decrypt_padded_vec::<Pkcs7>(conn_info)
        .map_err(|_| PayloadError::Padding)?;
    match serde_json::from_slice::<Value>(&plain) {
        Ok(Value::Object(info)) => Ok(info),
        Ok(_) => Err(invalid("conn_info", "expected a JSON object")),
        Err(source) => Err(PayloadError::Json {
            field: "conn_info",
            source,
        }),
    }
}

/// Standard base64 with padding; ASCII whitespace anywhere is ignored (as Python's `b64decode`
/// does for line breaks).
fn base64_field(field: &'static str, raw: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let compact: Vec<u8>;
    let input = if raw.iter().any(u8::is_ascii_whitespace) {
        compact = raw
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        &compact[..]
    } else {
        raw
    };
    if input.is_empty() {
        return Err(invalid(field, "empty"));
    }
    STANDARD
        .decode(input)
        .map_err(|source| PayloadError::Base64 { field, source })
}

fn invalid(field: &'static str, problem: impl Into<String>) -> PayloadError {
    PayloadError::Invalid {
        field,
        problem: problem.into(),
    }
}

fn string_field<'m>(
    map: &'m Map<String, Value>,
    field: &'static str,
) -> Result<&'m str, PayloadError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(PayloadError::Missing { field }),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(field, format!("expected a string, got {other}"))),
    }
}

fn optional_string(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, PayloadError> {
    match string_field(map, field) {
        Ok(s) => Ok(Some(s.to_owned())),
        Err(PayloadError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One of the five ZeroMQ ports: a JSON integer 1..=65535 (jupyter_client takes nothing else).
fn port_field(map: &Map<String, Value>, field: &'static str) -> Result<u16, PayloadError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(PayloadError::Missing { field }),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(field, format!("{n} is not a port (1-65535)"))),
        Some(other) => Err(invalid(
            field,
            format!("expected an integer port, got {other}"),
        )),
    }
}

/// An integer that upstream passes through `int()`: a JSON integer or a string of digits.
fn loose_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `comm_port`: optional; integer or numeric string; 0 means none.
fn comm_port_field(map: &Map<String, Value>) -> Result<Option<u16>, PayloadError> {
    let field = "comm_port";
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match loose_int(v) {
            Some(0) => Ok(None),
            Some(p) => u16::try_from(p)
                .map(Some)
                .map_err(|_| invalid(field, format!("{p} is not a port (1-65535)"))),
            None => Err(invalid(field, format!("expected an integer port, got {v}"))),
        },
    }
}

fn parse_connection(
    info: Map<String, Value>,
    legacy_id: Option<&str>,
) -> Result<ConnectionPayload, PayloadError> {
    let kernel_id = match legacy_id {
        Some(id) => id.to_owned(),
        None => {
            let id = string_field(&info, "kernel_id")?;
            if id.trim().is_empty() {
                return Err(invalid("kernel_id", "empty"));
            }
            id.to_owned()
        }
    };
    let [shell_port, iopub_port, stdin_port, control_port, hb_port] = [
        port_field(&info, PORT_FIELDS[0])?,
        port_field(&info, PORT_FIELDS[1])?,
        port_field(&info, PORT_FIELDS[2])?,
        port_field(&info, PORT_FIELDS[3])?,
        port_field(&info, PORT_FIELDS[4])?,
    ];
    Ok(ConnectionPayload {
        kernel_id,
        shell_port,
        iopub_port,
        stdin_port,
        control_port,
        hb_port,
        comm_port: comm_port_field(&info)?,
        ip: optional_string(&info, "ip")?,
        key: string_field(&info, "key")?.to_owned(),
        transport: optional_string(&info, "transport")?.unwrap_or_else(|| "tcp".to_owned()),
        signature_scheme: optional_string(&info, "signature_scheme")?
            .unwrap_or_else(|| "hmac-sha256".to_owned()),
        kernel_name: optional_string(&info, "kernel_name")?.unwrap_or_default(),
        pid: info.get("pid").and_then(loose_int),
        pgid: info.get("pgid").and_then(loose_int),
    })
}

#[cfg(test)]
mod tests;
