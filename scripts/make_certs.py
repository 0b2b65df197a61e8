#!/usr/bin/env python3
"""Make what a TLS, node-authenticated Flower deployment needs (Python ``cryptography`` only).

    python scripts/make_certs.py deploy/certs [--nodes 2] [--host NAME ...] [--force]

writes into OUT:

  ca.crt ca.key              a private certificate authority (EC P-384)
  server.pem server.key      the SuperLink's certificate, signed by the CA, with SANs for the
                             compose service name ``superlink``, ``localhost``, ``127.0.0.1``,
                             ``::1`` and every --host
  supernode-K supernode-K.pub  one OpenSSH EC P-384 key pair per SuperNode (K = 1..N): the
                             SuperNode starts with ``--auth-supernode-private-key supernode-K``,
                             and ``flwr supernode register supernode-K.pub CONNECTION`` tells the
                             SuperLink (started with ``--enable-supernode-auth``) to accept it

The SuperLink gets ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile
server.key``; SuperNodes and the ``flwr`` CLI get ``ca.crt`` as their root certificate.
Private keys are written owner-only (0600). Existing files are kept unless --force.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("superlink", "localhost", "127.0.0.1", "::1")


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedmjp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedmjp deployment CA")).issuer_name(_name("fedmjp deployment CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, hosts: list[str],
                     days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def make_node_key(path: Path) -> None:
    """An OpenSSH EC P-384 key pair (what ``flwr supernode register`` and the SuperNode read)."""
    key = ec.generate_private_key(ec.SECP384R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()), private=True)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(path.with_name(path.name + ".pub"), public + f" {path.name}\n".encode(), private=False)


def make_all(out: Path, nodes: int, hosts: list[str], days: int = 365, force: bool = False) -> list[Path]:
    """Write the CA, the server certificate and ``nodes`` SuperNode keys; returns what it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    written: list[Path] = []
    if force or not (out / "ca.crt").exists() or not (out / "server.pem").exists():
        ca_key, ca = make_ca(days)
        key, cert = make_server_cert(ca_key, ca, list(dict.fromkeys([*DEFAULT_HOSTS, *hosts])), days)
        _write(out / "ca.key", _pem_key(ca_key), private=True)
        _write(out / "ca.crt", ca.public_bytes(serialization.Encoding.PEM), private=False)
        _write(out / "server.key", _pem_key(key), private=True)
        _write(out / "server.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
        written += [out / n for n in ("ca.crt", "ca.key", "server.pem", "server.key")]
    for k in range(1, nodes + 1):
        path = out / f"supernode-{k}"
        if force or not path.exists():
            make_node_key(path)
            written += [path, path.with_name(path.name + ".pub")]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output directory (e.g. deploy/certs)")
    parser.add_argument("--nodes", type=int, default=2, help="SuperNode key pairs to make (default 2)")
    parser.add_argument("--host", action="append", default=[],
                        help="another SAN for the SuperLink certificate (DNS name or IP; repeatable)")
    parser.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    if args.nodes < 0:
        parser.error("--nodes must be >= 0")
    written = make_all(args.out, args.nodes, args.host, args.days, args.force)
    print(f"{args.out}: wrote {len(written)} file(s)" + (f": {', '.join(p.name for p in written)}" if written else
                                                         " (all present; --force to replace)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
