#!/usr/bin/python3
"""Writes the connection-info payload vectors the gateway-core response tests decode.

The payloads are encrypted the way Enterprise Gateway's kernel launchers do it (see
eg-behaviour.md section 4.2): a random AES-128 key encrypts the connection JSON in ECB mode with
PKCS#7 padding, the AES key is encrypted with the gateway's RSA public key (PKCS#1 v1.5; one
vector uses OAEP-SHA1), and the outer JSON is base64-encoded. Needs Debian's python3-pycryptodome
(module `Cryptodome`). Run it from this directory: /usr/bin/python3 make_vectors.py

The output is random (keys, AES keys, padding); the tests only depend on what it records.
"""

import base64
import json
import uuid

from Cryptodome.Cipher import AES, PKCS1_OAEP, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes
from Cryptodome.Util.Padding import pad

KERNEL_ID = "0b5a3c1e-7f2d-4e8a-9c6b-2d1f0e9a8b7c"


def public_b64(key):
    """The SPKI PEM body on one line, as the gateway hands it to launchers."""
    pem = key.publickey().export_key("PEM").decode()
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def conn_json(**extra):
    info = {
        "shell_port": 40123,
        "iopub_port": 40124,
        "stdin_port": 40125,
        "control_port": 40126,
        "hb_port": 40127,
        "ip": "0.0.0.0",
        "key": str(uuid.uuid4()),
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "",
    }
    info.update(extra)
    return info


def v1(public_key, plaintext, *, oaep=False, indent=None, raw_padded=None):
    aes_key = get_random_bytes(16)
    body = raw_padded if raw_padded is not None else pad(plaintext, 16)
    conn_info = AES.new(aes_key, AES.MODE_ECB).encrypt(body)
    rsa = PKCS1_OAEP.new(public_key) if oaep else PKCS1_v1_5.new(public_key)
    outer = {
        "version": 1,
        "key": base64.b64encode(rsa.encrypt(aes_key)).decode(),
        "conn_info": base64.b64encode(conn_info).decode(),
    }
    return base64.b64encode(json.dumps(outer, indent=indent).encode()).decode()


def legacy(kernel_id, plaintext):
    # Version "0": the kernel id's first 16 characters are the AES key; the JSON is followed by
    # filler up to the block size.
    filler = b"%" * (-len(plaintext) % 16)
    body = AES.new(kernel_id[:16].encode(), AES.MODE_ECB).encrypt(plaintext + filler)
    return base64.b64encode(body).decode()


def main():
    gateway = RSA.generate(1024)
    other = RSA.generate(1024)
    with open("gateway.pem", "wb") as f:
        f.write(gateway.export_key("PEM", pkcs=8))
        f.write(b"\n")
    vectors = {"public_key": public_b64(gateway), "kernel_id": KERNEL_ID, "cases": []}

    def case(name, payload, expect=None, error_field=None):
        entry = {"name": name, "payload": payload}
        if expect is not None:
            entry["expect"] = expect
        if error_field is not None:
            entry["error_field"] = error_field
        vectors["cases"].append(entry)

    # The Python launcher: json.dumps with default separators, integer pid/pgid.
    info = conn_json(pid=7, pgid=7, comm_port=40128, kernel_id=KERNEL_ID)
    case("python-launcher", v1(gateway, json.dumps(info).encode()), info)

    # The Toree launcher: pretty-printed outer JSON, compact inner JSON, pid only.
    info = conn_json(pid="4242", comm_port=40128, kernel_id=KERNEL_ID, kernel_name="spark_scala")
    inner = json.dumps(info, separators=(",", ":")).encode()
    case("toree-launcher", v1(gateway, inner, indent=2), info)

    # Numbers as strings where the gateway converts them (comm_port, pid, pgid).
    info = conn_json(pid="12", pgid="12", comm_port="40128", kernel_id=KERNEL_ID)
    case("numeric-strings", v1(gateway, json.dumps(info).encode()), info)

    # A launcher without a comm port, transport and signature scheme (defaults apply).
    info = conn_json(kernel_id=KERNEL_ID)
    del info["transport"], info["signature_scheme"], info["ip"]
    case("minimal", v1(gateway, json.dumps(info).encode()), info)

    # OAEP-SHA1 around the AES key instead of PKCS#1 v1.5.
    info = conn_json(pid=9, pgid=9, comm_port=40130, kernel_id=KERNEL_ID)
    case("oaep-sha1", v1(gateway, json.dumps(info).encode(), oaep=True), info)

    # Encrypted for another gateway's key.
    info = conn_json(pid=7, pgid=7, comm_port=40128, kernel_id=KERNEL_ID)
    case("other-gateway-key", v1(other, json.dumps(info).encode()), error_field="key")

    # The right keys, but the last block's padding is not PKCS#7.
    plaintext = json.dumps(info).encode()
    bad = plaintext + b"\x00" * (16 - len(plaintext) % 16)
    case("bad-padding", v1(gateway, plaintext, raw_padded=bad), error_field="conn_info")

    # Version "0": no kernel id inside; the gateway finds it by trial decryption.
    info = conn_json(pid=7, pgid=7)
    case("legacy-v0", legacy(KERNEL_ID, json.dumps(info).encode()), dict(info, kernel_id=KERNEL_ID))

    with open("vectors.json", "w") as f:
        json.dump(vectors, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
