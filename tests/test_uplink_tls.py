"""mqtts:// with a CA, mutual TLS (client cert/key) and username/password, against a real mosquitto."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mqtt_broker import MOSQUITTO, free_port, port_open, wait_for
from uplink_helpers import IngestThread, make_frame, uplink_cfg, wait_for_frames

from capture.config import ConfigError
from uplink import build_stage


def _cert(name: str, issuer_key, issuer_name, key, ca: bool = False, san: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path, cert=None, key=None) -> str:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def tls_broker(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = _cert("test-ca", ca_key, ca_name, ca_key, ca=True)
    srv_key, cli_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca": _write(tmp_path / "ca.pem", cert=ca),
        "srv": _write(tmp_path / "srv.pem", cert=_cert("localhost", ca_key, ca_name, srv_key, san=True)),
        "srv_key": _write(tmp_path / "srv.key", key=srv_key),
        "cli": _write(tmp_path / "cli.pem", cert=_cert("dev1", ca_key, ca_name, cli_key)),
        "cli_key": _write(tmp_path / "cli.key", key=cli_key),
    }
    plain, tls = free_port(), free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"per_listener_settings true\nlistener {plain} 127.0.0.1\nallow_anonymous true\n"
                    f"listener {tls} 127.0.0.1\nallow_anonymous true\ncafile {files['ca']}\n"
                    f"certfile {files['srv']}\nkeyfile {files['srv_key']}\nrequire_certificate true\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open("127.0.0.1", plain) and port_open("127.0.0.1", tls), 10, what="TLS broker")
        yield plain, tls, files
    finally:
        proc.terminate()
        proc.wait(10)


def test_mutual_tls_stream(tmp_path, tls_broker) -> None:
    plain, tls, f = tls_broker
    out = tmp_path / "out"
    ing = IngestThread(f"mqtt://127.0.0.1:{plain}", out)
    cfg = uplink_cfg(tmp_path, f"mqtts://127.0.0.1:{tls}", tls_ca=f["ca"], tls_cert=f["cli"], tls_key=f["cli_key"],
                     username="dev1", password="secret")
    cfg.check()
    stage = build_stage(cfg, "dev1", "s1")
    stage.start()
    t0 = time.monotonic()
    for i in range(100):
        stage.apply(make_frame(i, size=(640, 480)))
    assert stage.drain(30)
    assert time.monotonic() - t0 < 15  # no stalls on TLS-buffered PUBACKs
    assert len(set(wait_for_frames(out, 100, 20))) == 100
    ing.stop()
    stage.close()


def test_tls_without_client_cert_never_connects_and_keeps_spool(tmp_path, tls_broker) -> None:
    _, tls, f = tls_broker
    stage = build_stage(uplink_cfg(tmp_path, f"mqtts://127.0.0.1:{tls}", tls_ca=f["ca"]), "dev1", "s1")
    stage.start()
    for i in range(3):
        stage.apply(make_frame(i))
    t0 = time.monotonic()
    wait_for(lambda: stage.status()["sender"].get("connect_failures", 0) >= 2, 15, what="refused connects")
    assert not stage.drain(0.2) and stage.status()["spool_records"] == 3 and time.monotonic() - t0 < 15
    stage.close()


def test_bad_tls_config_names_the_field(tmp_path) -> None:
    with pytest.raises(ConfigError, match="tls_ca"):
        uplink_cfg(tmp_path, "mqtts://h:8883", tls_ca=str(tmp_path / "missing.pem")).check()
    with pytest.raises(ConfigError, match="tls_cert"):
        uplink_cfg(tmp_path, "mqtts://h:8883", tls_cert=__file__).check()
    with pytest.raises(ConfigError, match="broker"):
        uplink_cfg(tmp_path, "http://h:1").check()
