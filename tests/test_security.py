"""TLS and SASL with unmodified clients on loopback: a broker with a PLAINTEXT listener (for
the administrator), SASL_SSL, SASL_PLAINTEXT and SSL ones; SCRAM users made through
AlterUserScramCredentials by a real admin client; confluent-kafka, kafka-python and aiokafka
producing, consuming and committing in a group over SASL_SSL with SCRAM-SHA-512 and over
SASL_PLAINTEXT with PLAIN; and every way of getting it wrong refused cleanly, with nothing
served: a wrong password, an unknown user, a mechanism not offered, a plaintext client on a
TLS port, a request before authentication, a token out of turn, garbage and oversized
tokens, and many half-finished TLS handshakes, none of which disturbs a healthy client."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import struct
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from benches.security import tls_files
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from tidelog.broker import Broker, BrokerConfig
from tidelog.broker.clock import ManualClock
from tidelog.broker.server import BrokerThread
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.scram import ScramMechanism as Mech
from tidelog.scram import salted_password

from .cluster import member, needs_etcd
from .conftest import poll_until, stop_gracefully
from .kafka_clients import CLIENTS, Security, consume, consume_in_group, create_topic, produce
from .wire import Wire, request_frame

PLAIN_USERS = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'user_admin="admin-secret" user_carol="carol-secret";'
)


@dataclasses.dataclass
class SecureBroker:
    broker: BrokerThread
    ca: Path
    ports: dict[str, int]
    ca_authority: trustme.CA

    def bootstrap(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    @property
    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap("PLAINTEXT")})


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    ca, ca_file, cert_file = tls_files(tmp_path)
    settings = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "ssl.certificate.location": str(cert_file),
        "ssl.ca.location": str(ca_file),
        "ssl.client.auth": "requested",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "sasl.jaas.config": PLAIN_USERS,
    }
    config = BrokerConfig.from_settings(settings, port=0, host="127.0.0.1", data_dir=str(tmp_path / "data"))
    thread = Broker(config).run_in_thread()
    try:
        ports = {e.name: e.port for e in thread.broker.endpoints}
        yield SecureBroker(thread, ca_file, ports, ca)
    finally:
        thread.stop()


def add_scram_user(admin: AdminClient, user: str, password: str, mechanism: ScramMechanism) -> None:
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, 8192), password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(30)


def scram512(secure: SecureBroker, user: str = "alice", password: str = "alice-secret") -> Security:
    return Security("SASL_SSL", "SCRAM-SHA-512", user, password, str(secure.ca))


def plain(user: str = "carol", password: str = "carol-secret") -> Security:
    return Security("SASL_PLAINTEXT", "PLAIN", user, password)


@pytest.mark.parametrize("client", CLIENTS)
def test_clients_produce_consume_and_commit_over_sasl_ssl_scram_and_sasl_plaintext_plain(secure, client):
    add_scram_user(secure.admin, "alice", "alice-secret", ScramMechanism.SCRAM_SHA_512)
    for listener, security in (("SASL_SSL", scram512(secure)), ("SASL_PLAINTEXT", plain())):
        bootstrap = secure.bootstrap(listener)
        topic = f"secure-{client}-{listener}"
        create_topic(client, bootstrap, topic, 3, security=security)
        sent = [(b"k%d" % i, b"%s-%d" % (listener.encode(), i)) for i in range(600)]
        produce(client, bootstrap, topic, sent, "all", "none", security=security)
        got = consume(client, bootstrap, topic, 3, expected=len(sent), security=security)
        assert sorted(v for *_, v in got) == sorted(v for _, v in sent)
        grouped, committed = consume_in_group(
            client, bootstrap, topic, f"g-{client}-{listener}", len(sent), security=security
        )
        assert sorted(v for *_, v in grouped) == sorted(v for _, v in sent)
        ends: dict[int, int] = {}
        for partition, offset, _, _ in grouped:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        assert committed == ends


def test_scram_credentials_are_managed_over_the_wire_and_survive_a_restart(secure, tmp_path):
    admin = secure.admin
    add_scram_user(admin, "dave", "pw-256", ScramMechanism.SCRAM_SHA_256)
    add_scram_user(admin, "dave", "pw-512", ScramMechanism.SCRAM_SHA_512)
    described = admin.describe_user_scram_credentials(["dave"])["dave"].result(30)
    assert sorted((i.mechanism, i.iterations) for i in described.scram_credential_infos) == [
        (ScramMechanism.SCRAM_SHA_256, 8192),
        (ScramMechanism.SCRAM_SHA_512, 8192),
    ]
    for future in admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_256)]
    ).values():
        future.result(30)
    stored = secure.broker.broker.image.scram_credentials["dave"]
    assert list(stored) == [Mech.SCRAM_SHA_512]
    meta = (tmp_path / "data" / "meta" / "users" / "dave.json").read_text()
    assert "pw-512" not in meta and "iterations" in meta  # keys, never the password

    # The errors of Kafka's controller, with the wire API directly.
    w = Wire(secure.bootstrap("PLAINTEXT"))
    A = m.AlterUserScramCredentialsRequest
    salt = b"s" * 16
    up = A.ScramCredentialUpsertion
    req = A(
        deletions=[
            A.ScramCredentialDeletion(name="nobody", mechanism=Mech.SCRAM_SHA_256),
            A.ScramCredentialDeletion(name="twice", mechanism=Mech.SCRAM_SHA_256),
        ],
        upsertions=[
            up(name="twice", mechanism=1, iterations=4096, salt=salt, salted_password=b"x" * 32),
            up(name="few", mechanism=1, iterations=100, salt=salt, salted_password=b"x" * 32),
            up(name="", mechanism=1, iterations=4096, salt=salt, salted_password=b"x" * 32),
            up(name="odd", mechanism=9, iterations=4096, salt=salt, salted_password=b"x" * 32),
        ],
    )
    results = {r.user: (r.error_code, r.error_message) for r in w.request(req, 0).results}
    assert results["nobody"][0] == ec.RESOURCE_NOT_FOUND
    assert results["twice"][0] == ec.DUPLICATE_RESOURCE
    assert results["few"] == (ec.UNACCEPTABLE_CREDENTIAL, "Too few iterations")
    assert results[""][0] == ec.UNACCEPTABLE_CREDENTIAL
    assert results["odd"][0] == ec.UNSUPPORTED_SASL_MECHANISM
    D = m.DescribeUserScramCredentialsRequest
    r = w.request(D(users=[D.UserName(name="dave"), D.UserName(name="ghost")]), 0)
    assert {x.user: x.error_code for x in r.results} == {"dave": ec.NONE, "ghost": ec.RESOURCE_NOT_FOUND}
    w.close()

    secure.broker.stop()
    restarted = Broker(secure.broker.broker.config).run_in_thread()
    try:
        ports = {e.name: e.port for e in restarted.broker.endpoints}
        dave = Security("SASL_SSL", "SCRAM-SHA-512", "dave", "pw-512", str(secure.ca))
        bootstrap = f"127.0.0.1:{ports['SASL_SSL']}"
        create_topic("confluent-kafka", bootstrap, "after-restart", 1, security=dave)
        produce("confluent-kafka", bootstrap, "after-restart", [(b"k", b"v")], "all", "none", security=dave)
    finally:
        restarted.stop()


# ---- refusals, at the wire ----


def sasl_wire(port: int, context: ssl.SSLContext | None = None) -> Wire:
    w = Wire(f"127.0.0.1:{port}")
    if context is not None:
        w.sock = context.wrap_socket(w.sock, server_hostname="127.0.0.1")
    return w


def client_context(secure: SecureBroker) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(secure.ca))


def handshake(w: Wire, mechanism: str, version: int = 1) -> m.SaslHandshakeResponse:
    return w.request(m.SaslHandshakeRequest(mechanism=mechanism), version)


def authenticate(w: Wire, token: bytes) -> m.SaslAuthenticateResponse:
    return w.request(m.SaslAuthenticateRequest(auth_bytes=token), 2)


def metadata_request() -> m.MetadataRequest:
    return m.MetadataRequest(topics=None, allow_auto_topic_creation=False)


def authentication_error(secure: SecureBroker, security: Security) -> str:
    """What librdkafka reports when it connects with ``security`` (waits for the report)."""
    errors: list[KafkaError] = []
    p = Producer(
        {"bootstrap.servers": secure.bootstrap(security.protocol), **security.settings("confluent-kafka")}
        | {"error_cb": errors.append}
    )
    poll_until(
        lambda: p.poll(0.1) >= 0 and any(e.code() == KafkaError._AUTHENTICATION for e in errors),
        "an authentication error",
    )
    return next(e.str() for e in errors if e.code() == KafkaError._AUTHENTICATION)


def test_refusals_answer_precisely_then_close_and_serve_nothing(secure, caplog):
    caplog.set_level("INFO", logger="tidelog")
    add_scram_user(secure.admin, "alice", "alice-secret", ScramMechanism.SCRAM_SHA_512)
    port = secure.ports["SASL_PLAINTEXT"]

    # A mechanism not offered: UNSUPPORTED_SASL_MECHANISM with the ones that are, then closed.
    w = sasl_wire(port)
    r = handshake(w, "GSSAPI")
    assert r.error_code == ec.UNSUPPORTED_SASL_MECHANISM
    assert r.mechanisms == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    assert w.closed_by_peer()

    # A wrong password, and an unknown user: the same answer, which names neither.
    for user, password in (("carol", "bad-pw-x"), ("mallory", "carol-secret")):
        w = sasl_wire(port)
        assert handshake(w, "PLAIN").error_code == ec.NONE
        r = authenticate(w, b"\0%s\0%s" % (user.encode(), password.encode()))
        assert r.error_code == ec.SASL_AUTHENTICATION_FAILED
        assert r.error_message == "Authentication failed: Invalid username or password"
        assert w.closed_by_peer()

    # A wrong SCRAM password, through a real client: it reports the authentication failure.
    assert "Authentication failed" in authentication_error(secure, scram512(secure, password="bad-pw-y"))

    # A request before authentication: closed without an answer.
    w = sasl_wire(port)
    w.send_raw(request_frame(metadata_request(), 12, 1))
    assert w.read_frame() is None

    # SaslAuthenticate without a handshake: ILLEGAL_SASL_STATE, then closed.
    w = sasl_wire(port)
    r = authenticate(w, b"\0carol\0carol-secret")
    assert r.error_code == ec.ILLEGAL_SASL_STATE
    assert w.closed_by_peer()

    # Garbage SCRAM tokens: refused, closed.
    w = sasl_wire(port)
    assert handshake(w, "SCRAM-SHA-512").error_code == ec.NONE
    r = authenticate(w, b"\xff\xfe garbage \0\0\0")
    assert r.error_code == ec.SASL_AUTHENTICATION_FAILED
    assert w.closed_by_peer()

    # An oversized token (over sasl.server.max.receive.size): closed before it is read.
    w = sasl_wire(port)
    assert handshake(w, "PLAIN").error_code == ec.NONE
    w.send_raw(struct.pack(">i", 1 << 20) + b"\0" * 1024)
    assert w.read_frame() is None
    poll_until(  # logged as the connection closes
        lambda: any("sasl.server.max.receive.size=524288" in r.getMessage() for r in caplog.records),
        "the refusal's log line",
    )

    # A plaintext client on the TLS port: no Kafka answer, the connection closes.
    w = sasl_wire(secure.ports["SASL_SSL"])
    w.send_raw(request_frame(m.ApiVersionsRequest(), 0, 1))
    assert w.read_frame() is None

    # No log line carries a password.
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(secret in text for secret in ("carol-secret", "alice-secret", "bad-pw"))
    assert "127.0.0.1" in text  # the refusals name the client's address


def test_sasl_handshake_v0_takes_bare_tokens(secure):
    """Clients of the first SASL protocol (SaslHandshake v0) send their tokens as bare frames."""
    w = sasl_wire(secure.ports["SASL_PLAINTEXT"])
    assert handshake(w, "PLAIN", version=0).error_code == ec.NONE
    token = b"\0carol\0carol-secret"
    w.send_raw(struct.pack(">i", len(token)) + token)
    assert w.read_frame() == b""
    r = w.request(metadata_request(), 12)
    assert [b.port for b in r.brokers] == [secure.ports["SASL_PLAINTEXT"]]


def scram_login(w: Wire, user: str, password: str) -> int:
    """SCRAM-SHA-256 step by step with ``scramp``'s client (which checks the broker's
    signature); the session lifetime the broker answers."""
    import scramp

    assert handshake(w, "SCRAM-SHA-256").error_code == ec.NONE
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    first = authenticate(w, client.get_client_first().encode())
    assert first.error_code == ec.NONE, first.error_message
    client.set_server_first(first.auth_bytes.decode())
    final = authenticate(w, client.get_client_final().encode())
    assert final.error_code == ec.NONE, final.error_message
    client.set_server_final(final.auth_bytes.decode())
    return int(final.session_lifetime_ms)


def test_a_session_ends_after_connections_max_reauth_ms_unless_the_client_reauthenticates(tmp_path):
    """The salted password is made here (``tidelog.scram``) and sent with the wire API; the
    broker's sessions last 60 s, its clock is moved past that: the connection that
    re-authenticates goes on, the one that does not is closed at its next request."""
    settings = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "sasl.enabled.mechanisms": "SCRAM-SHA-256",
        "connections.max.reauth.ms": "60000",
    }
    config = BrokerConfig.from_settings(settings, port=0, host="127.0.0.1", data_dir=str(tmp_path / "d"))
    clock = ManualClock()
    thread = Broker(config, clock=clock).run_in_thread()
    try:
        ports = {e.name: e.port for e in thread.broker.endpoints}
        salt = b"0123456789abcdef"
        U = m.AlterUserScramCredentialsRequest
        upsert = U.ScramCredentialUpsertion(
            name="erin",
            mechanism=Mech.SCRAM_SHA_256,
            iterations=4096,
            salt=salt,
            salted_password=salted_password(Mech.SCRAM_SHA_256, "erin-pw", salt, 4096),
        )
        admin = Wire(f"127.0.0.1:{ports['PLAINTEXT']}")
        assert admin.request(U(deletions=[], upsertions=[upsert]), 0).results[0].error_code == ec.NONE
        staying, leaving = sasl_wire(ports["SASL_PLAINTEXT"]), sasl_wire(ports["SASL_PLAINTEXT"])
        assert scram_login(staying, "erin", "erin-pw") == 60_000
        assert scram_login(leaving, "erin", "erin-pw") == 60_000
        assert leaving.request(metadata_request(), 12).brokers
        clock.advance(61)
        assert scram_login(staying, "erin", "erin-pw") == 60_000
        assert staying.request(metadata_request(), 12).brokers
        leaving.send_raw(request_frame(metadata_request(), 12, 99))
        assert leaving.read_frame() is None
        # Re-authenticating as somebody else is refused.
        U2 = U.ScramCredentialUpsertion
        other = U2(
            name="frank",
            mechanism=Mech.SCRAM_SHA_256,
            iterations=4096,
            salt=salt,
            salted_password=salted_password(Mech.SCRAM_SHA_256, "frank-pw", salt, 4096),
        )
        assert admin.request(U(deletions=[], upsertions=[other]), 0).results[0].error_code == ec.NONE
        with pytest.raises(AssertionError, match="Cannot change principals"):
            scram_login(staying, "frank", "frank-pw")
        assert staying.closed_by_peer()
    finally:
        thread.stop()


def test_kafkas_own_tools_manage_users_and_the_java_client_produces_and_consumes_over_sasl_ssl(
    secure, tmp_path
):
    """Kafka's own ``kafka-configs`` (the Java admin client) connects with SCRAM-SHA-512 over
    TLS, adds a user with ``--add-config 'SCRAM-SHA-512=[...]'``, describes and removes it;
    the Java producer and consumer (``kafka-console-producer`` / ``-consumer``) log in as
    that user in between."""
    from .kafka_tools import run_java

    add_scram_user(secure.admin, "alice", "alice-secret", ScramMechanism.SCRAM_SHA_512)

    def client_properties(user: str, password: str) -> Path:
        props = tmp_path / f"{user}.properties"
        props.write_text(
            "security.protocol=SASL_SSL\n"
            "sasl.mechanism=SCRAM-SHA-512\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";\n'
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={secure.ca}\n"
        )
        return props

    alice, bootstrap = client_properties("alice", "alice-secret"), secure.bootstrap("SASL_SSL")

    def configs(*args: str) -> str:
        done = run_java(
            "org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", bootstrap, "--command-config",
            str(alice), "--entity-type", "users", "--entity-name", "zed", *args,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    configs("--alter", "--add-config", "SCRAM-SHA-512=[iterations=8192,password=zed-pw]")
    assert "SCRAM-SHA-512=iterations=8192" in configs("--describe")
    zed = client_properties("zed", "zed-pw")
    produced = run_java(
        "org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", bootstrap, "--topic", "zed-topic",
        "--command-config", str(zed), stdin="one\ntwo\nthree\n",
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr[-3000:]
    consumed = run_java(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap, "--topic",
        "zed-topic", "--from-beginning", "--max-messages", "3", "--group", "zed-group",
        "--command-config", str(zed), "--timeout-ms", "60000",
    )  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr[-3000:]
    assert consumed.stdout.split() == ["one", "two", "three"]
    configs("--alter", "--delete-config", "SCRAM-SHA-512")
    assert "zed" not in secure.broker.broker.image.scram_credentials
    assert "Authentication failed" in authentication_error(
        secure, Security("SASL_SSL", "SCRAM-SHA-512", "zed", "zed-pw", str(secure.ca))
    )


def test_an_ssl_client_certificate_names_the_principal(secure, tmp_path, caplog):
    """On an SSL listener a client's certificate is checked against ``ssl.ca.location`` and
    its subject, written as RFC 2253 writes it (most specific first), is the principal;
    without a certificate (``ssl.client.auth=requested``) it stays User:ANONYMOUS; one from
    another authority is refused."""
    caplog.set_level("DEBUG", logger="tidelog.broker")
    cert = secure.ca_authority.issue_cert(
        "client.example", common_name="app-1", organization_name="Acme, Inc", organization_unit_name="ops"
    )
    key_file = tmp_path / "client.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(key_file))
    ctx = client_context(secure)
    ctx.load_cert_chain(str(key_file))
    w = sasl_wire(secure.ports["SSL"], ctx)
    assert w.request(metadata_request(), 12).brokers  # served without SASL
    w.close()
    named = [r.getMessage() for r in caplog.records if "is User:" in r.getMessage()]
    assert len(named) == 1 and named[0].endswith("is User:CN=app-1,OU=ops,O=Acme\\, Inc"), named

    anonymous = sasl_wire(secure.ports["SSL"], client_context(secure))
    assert anonymous.request(metadata_request(), 12).brokers
    anonymous.close()

    stranger = tmp_path / "stranger.pem"
    trustme.CA().issue_cert("x.example").private_key_and_cert_chain_pem.write_to_path(str(stranger))
    ctx = client_context(secure)
    ctx.load_cert_chain(str(stranger))
    try:  # TLS 1.3 tells the client once it reads
        refused = sasl_wire(secure.ports["SSL"], ctx)
        refused.send_raw(request_frame(metadata_request(), 12, 1))
        assert refused.read_frame() is None
    except (ssl.SSLError, ConnectionError):
        pass
    assert len([r for r in caplog.records if "is User:" in r.getMessage()]) == 1


def test_half_finished_tls_handshakes_and_garbage_leave_healthy_clients_served(secure):
    """200 connections that start a TLS handshake and stop, and 50 that send garbage to the
    SASL port: the broker stays up, and a SCRAM client produces and consumes meanwhile."""
    add_scram_user(secure.admin, "alice", "alice-secret", ScramMechanism.SCRAM_SHA_512)
    stuck = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", secure.ports["SASL_SSL"]), timeout=10)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
        stuck.append(sock)
    for i in range(50):
        with socket.create_connection(("127.0.0.1", secure.ports["SASL_PLAINTEXT"]), timeout=10) as sock:
            sock.sendall(struct.pack(">i", 40) + bytes(range(i, i + 40)))
    try:
        security = scram512(secure)
        bootstrap = secure.bootstrap("SASL_SSL")
        create_topic("confluent-kafka", bootstrap, "healthy", 2, security=security)
        sent = [(b"k%d" % i, b"v%d" % i) for i in range(2000)]
        produce("confluent-kafka", bootstrap, "healthy", sent, "all", "lz4", security=security)
        got = consume("confluent-kafka", bootstrap, "healthy", 2, expected=len(sent), security=security)
        assert sorted(v for *_, v in got) == sorted(v for _, v in sent)
    finally:
        for sock in stuck:
            sock.close()


def test_the_tidelog_command_manages_users_and_connects_with_sasl_ssl(secure, tmp_path):
    """``tidelog users`` adds, lists and deletes a SCRAM user; every tidelog command takes
    ``--command-config`` with Kafka's client properties and uses TLS and SCRAM with it."""
    from .test_cli import tidelog

    admin = ("--bootstrap-server", secure.bootstrap("PLAINTEXT"))
    r = tidelog("users", "add", "bob", "--mechanism", "SCRAM-SHA-256", *admin, stdin="bob-pw\n")
    assert r.returncode == 0 and r.stdout == "added bob\n", r.stderr
    assert tidelog("users", "add", "bob", "--password", "bob-pw-512", *admin).returncode == 0
    listed = tidelog("users", "list", *admin).stdout
    assert listed == "bob\tSCRAM-SHA-256 (iterations=8192), SCRAM-SHA-512 (iterations=8192)\n"
    props = tmp_path / "bob.properties"
    props.write_text(
        f"security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\nsasl.username=bob\n"
        f"sasl.password=bob-pw\nssl.ca.location={secure.ca}\n"
    )
    bob = ("--bootstrap-server", secure.bootstrap("SASL_SSL"), "--command-config", str(props))
    assert tidelog("topics", "create", "bobs", "--partitions", "2", *bob).returncode == 0
    assert tidelog("produce", "bobs", *bob, stdin="one\ntwo\n").returncode == 0
    r = tidelog("consume", "bobs", "--from-beginning", "--max-messages", "2", *bob)
    assert sorted(r.stdout.split()) == ["one", "two"], r.stderr
    assert tidelog("users", "delete", "bob", *admin).stdout == "deleted bob\n"
    refused = tidelog("topics", "list", *bob)
    assert refused.returncode == 1 and "SASL authentication failed" in refused.stderr
    assert tidelog("users", "list", *admin).stdout == ""


@needs_etcd
def test_scram_users_and_acls_are_cluster_metadata(tmp_path, etcd):
    """A user added through one broker of an etcd cluster can log in on another, an ACL
    made through one is enforced by the other, and a user deleted through the second can no
    longer log in on the first (credentials and ACLs live in etcd, the credentials as keys,
    never passwords). Replication runs over the PLAINTEXT listener, whose clients are the
    super user here."""
    from tidelog.client.connection import BrokerError, Connection
    from tidelog.cluster.local import free_port
    from tidelog.protocol.security import ClientSecurity

    from .test_cli import tidelog

    ivan = ClientSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "ivan", "ivan-pw")

    def logs_in(port: int) -> bool:
        try:
            with Connection(f"127.0.0.1:{port}", security=ivan):
                return True
        except BrokerError:
            return False

    sasl_ports = {1: free_port(), 2: free_port()}
    cluster = uuid.uuid4().hex[:8]
    procs, ports = {}, {}
    try:
        for node in (1, 2):
            procs[node], ports[node] = member(
                tmp_path,
                etcd,
                node,
                cluster,
                "--set",
                f"listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:{sasl_ports[node]}",
                "--set",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "--set",
                "authorizer.class.name=tidelog",
                "--set",
                "super.users=User:ANONYMOUS",
            )
        assert not logs_in(sasl_ports[2])
        added = tidelog(
            "users", "add", "ivan", "--password", "ivan-pw", "--bootstrap-server", f"127.0.0.1:{ports[1]}"
        )
        assert added.returncode == 0, added.stderr
        assert logs_in(sasl_ports[1])  # the change returned once broker 1 had it
        poll_until(lambda: logs_in(sasl_ports[2]), "broker 2 to know ivan")
        admin = ("--bootstrap-server", f"127.0.0.1:{ports[1]}")
        created = tidelog(
            "topics", "create", "ivans", "--partitions", "2", "--replication-factor", "2", *admin
        )
        assert created.returncode == 0, created.stderr

        def ivan_sees() -> list[str]:
            with Connection(f"127.0.0.1:{sasl_ports[2]}", security=ivan) as conn:
                r = conn.send(m.MetadataRequest(topics=None, allow_auto_topic_creation=False))
                return [t.name for t in r.topics]

        assert ivan_sees() == []
        granted = tidelog(
            "acls",
            "add",
            "--allow-principal",
            "User:ivan",
            "--operation",
            "Write",
            "--topic",
            "ivans",
            *admin,
        )
        assert granted.returncode == 0, granted.stderr
        poll_until(lambda: ivan_sees() == ["ivans"], "broker 2 to apply the ACL")
        sasl = Security("SASL_PLAINTEXT", "SCRAM-SHA-512", "ivan", "ivan-pw")  # leaders on both brokers
        sent = [(b"k%d" % i, b"v") for i in range(20)]
        produce("confluent-kafka", f"127.0.0.1:{sasl_ports[2]}", "ivans", sent, "all", "none", security=sasl)
        deleted = tidelog("users", "delete", "ivan", "--bootstrap-server", f"127.0.0.1:{ports[2]}")
        assert deleted.returncode == 0, deleted.stderr
        poll_until(lambda: not logs_in(sasl_ports[1]), "broker 1 to forget ivan")
    finally:
        for proc in procs.values():
            stop_gracefully(proc)


@needs_etcd
def test_a_cluster_replicates_over_sasl_ssl_logged_in_as_its_broker_user(tmp_path, etcd):
    """Brokers with one listener, SASL_SSL, and ACLs on: followers connect to their leaders
    in TLS and log in as ``User:broker`` (``sasl.mechanism.inter.broker.protocol``, the
    ``username``/``password`` of the listener's own JAAS config, not the broker-wide one,
    whose password is wrong), a super user. With ``min.insync.replicas=2`` an acks=all
    produce succeeds only once the follower has the records, so every acknowledgement is
    proof of replication over SASL_SSL."""
    _, ca_file, cert_file = tls_files(tmp_path)
    jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required {};"
    settings = {
        "listeners": "SASL_SSL://127.0.0.1:0",
        "ssl.certificate.location": str(cert_file),
        "listener.name.sasl_ssl.ssl.ca.location": str(ca_file),
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.jaas.config": jaas.format('username="broker" password="wrong"'),
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas.format(
            'username="broker" password="broker-pw" user_broker="broker-pw" user_admin="admin-pw"'
        ),
        "authorizer.class.name": "tidelog",
        "super.users": "User:broker;User:admin",
        "min.insync.replicas": "2",
    }
    args = [x for k, v in settings.items() for x in ("--set", f"{k}={v}")]
    cluster = uuid.uuid4().hex[:8]
    procs, ports = {}, {}
    try:
        for node in (1, 2):
            procs[node], ports[node] = member(tmp_path, etcd, node, cluster, *args)
        admin = Security("SASL_SSL", "PLAIN", "admin", "admin-pw", str(ca_file))
        bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports.values())
        create_topic("confluent-kafka", bootstrap, "replicated", 2, replication_factor=2, security=admin)
        sent = [(b"k%d" % i, b"v%d" % i) for i in range(300)]
        produce("confluent-kafka", bootstrap, "replicated", sent, "all", "none", security=admin)
        got = consume("confluent-kafka", bootstrap, "replicated", 2, expected=len(sent), security=admin)
        assert sorted(v for *_, v in got) == sorted(v for _, v in sent)
    finally:
        for proc in procs.values():
            stop_gracefully(proc)


def test_librdkafka_reauthenticates_before_its_session_ends(tmp_path, caplog):
    """With ``connections.max.reauth.ms`` = 1.5 s, a confluent-kafka producer that keeps
    producing for longer re-authenticates on its connection (KIP-368) rather than being cut
    off: the broker logs more than one login from the same connection, never an expired
    session, and every record is delivered."""
    import time

    caplog.set_level("DEBUG", logger="tidelog.broker")
    settings = {
        "listeners": "SASL_PLAINTEXT://127.0.0.1:0",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.jaas.config": PLAIN_USERS,
        "connections.max.reauth.ms": "1500",
    }
    config = BrokerConfig.from_settings(settings, port=0, host="127.0.0.1", data_dir=str(tmp_path / "d"))
    thread = Broker(config).run_in_thread()
    try:
        p = Producer({"bootstrap.servers": thread.bootstrap, **plain().settings("confluent-kafka")})
        errors: list[KafkaError] = []
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < 4:  # past two session lifetimes
            p.produce("reauth", b"%d" % sent, on_delivery=lambda e, _m: errors.append(e) if e else None)
            p.poll(0.005)
            sent += 1
        assert p.flush(30) == 0 and not errors
        messages = [r.getMessage() for r in caplog.records]
        logins = Counter(line.split()[0] for line in messages if " authenticated as User:carol" in line)
        assert max(logins.values()) >= 2, logins  # one connection logged in again
        assert not [line for line in messages if "without re-authentication" in line]
        w = Wire(thread.bootstrap)  # everything produced is there
        assert handshake(w, "PLAIN").error_code == ec.NONE
        assert authenticate(w, b"\0carol\0carol-secret").error_code == ec.NONE
        L = m.ListOffsetsRequest
        part = L.ListOffsetsTopic.ListOffsetsPartition(partition_index=0, timestamp=-1)
        offsets = L(replica_id=-1, topics=[L.ListOffsetsTopic(name="reauth", partitions=[part])])
        assert w.request(offsets, 5).topics[0].partitions[0].offset == sent
    finally:
        thread.stop()


def test_each_listener_has_its_own_certificate_client_auth_mechanisms_and_plain_users(tmp_path):
    """``listener.name.<l>.…`` settings (KIP-103): INTERNAL (SASL_PLAINTEXT) has PLAIN with
    only the broker's user; EXTERNAL (SASL_SSL) the broker-wide PLAIN users and SCRAM too;
    CERTS (SSL) its own certificate, from another authority, and requires a client
    certificate. Each refuses what another listener accepts, and real clients use each."""
    ca, ca_file, cert_file = tls_files(tmp_path)
    other = trustme.CA()
    other_ca, certs_cert, client_cert = (
        tmp_path / "other-ca.pem",
        tmp_path / "certs.pem",
        tmp_path / "client.pem",
    )
    other.cert_pem.write_to_path(str(other_ca))
    other.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(certs_cert))
    other.issue_cert("app.example", common_name="app").private_key_and_cert_chain_pem.write_to_path(
        str(client_cert)
    )
    jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required {};"
    settings = {
        "listeners": "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0,EXTERNAL://127.0.0.1:0,CERTS://127.0.0.1:0",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL,CERTS:SSL"
        ),
        "ssl.certificate.location": str(cert_file),
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.jaas.config": jaas.format('user_alice="alice-secret"'),
        "listener.name.internal.plain.sasl.jaas.config": jaas.format('user_broker="broker-secret"'),
        "listener.name.external.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
        "listener.name.internal.connections.max.reauth.ms": "60000",
        "listener.name.internal.plain.connections.max.reauth.ms": "30000",
        "listener.name.external.scram-sha-256.connections.max.reauth.ms": "45000",
        "listener.name.certs.ssl.certificate.location": str(certs_cert),
        "listener.name.certs.ssl.ca.location": str(other_ca),
        "listener.name.certs.ssl.client.auth": "required",
    }
    config = BrokerConfig.from_settings(settings, port=0, host="127.0.0.1", data_dir=str(tmp_path / "data"))
    assert config.unknown == []
    thread = Broker(config).run_in_thread()
    try:
        ports = {e.name: e.port for e in thread.broker.endpoints}
        broker = SecureBroker(thread, ca_file, ports, ca)
        internal = Wire(broker.bootstrap("INTERNAL"))
        assert handshake(internal, "SCRAM-SHA-256").mechanisms == ["PLAIN"]
        internal.close()
        external = sasl_wire(ports["EXTERNAL"], client_context(broker))
        assert handshake(external, "PLAIN").mechanisms == ["PLAIN", "SCRAM-SHA-256"]
        external.close()

        def on(listener: str, user: str, password: str, **kw: str) -> tuple[str, Security]:
            protocol = config.listener_security_protocol_map[listener]
            return broker.bootstrap(listener), Security(protocol, "PLAIN", user, password, **kw)

        # Each listener's users, and no other's.
        for bootstrap, security in (
            on("INTERNAL", "broker", "broker-secret"),
            on("EXTERNAL", "alice", "alice-secret", cafile=str(ca_file)),
        ):
            topic = f"t-{bootstrap.rpartition(':')[2]}"
            create_topic("confluent-kafka", bootstrap, topic, 1, security=security)
            sent = [(None, b"%d" % i) for i in range(50)]
            produce("confluent-kafka", bootstrap, topic, sent, "all", "none", security=security)
            got = consume("confluent-kafka", bootstrap, topic, 1, expected=len(sent), security=security)
            assert [v for *_, v in got] == [v for _, v in sent]
        for listener, user, password in (
            ("INTERNAL", "alice", "alice-secret"),
            ("EXTERNAL", "broker", "broker-secret"),
        ):
            w = sasl_wire(ports[listener], client_context(broker) if listener == "EXTERNAL" else None)
            assert handshake(w, "PLAIN").error_code == ec.NONE
            refused = authenticate(w, f"\0{user}\0{password}".encode())
            assert refused.error_code == ec.SASL_AUTHENTICATION_FAILED, (listener, user)
            w.close()
        # Session lifetimes: the mechanism's own on INTERNAL (over the listener's), none on
        # EXTERNAL for PLAIN (its value is SCRAM-SHA-256's only).
        for listener, user, password, lifetime in (
            ("INTERNAL", "broker", "broker-secret", 30_000),
            ("EXTERNAL", "alice", "alice-secret", 0),
        ):
            w = sasl_wire(ports[listener], client_context(broker) if listener == "EXTERNAL" else None)
            assert handshake(w, "PLAIN").error_code == ec.NONE
            accepted = authenticate(w, f"\0{user}\0{password}".encode())
            assert (accepted.error_code, accepted.session_lifetime_ms) == (ec.NONE, lifetime), listener
            w.close()

        # CERTS serves its own certificate and wants the client's.
        with pytest.raises(ssl.SSLCertVerificationError):
            sasl_wire(ports["CERTS"], client_context(broker))  # the broker-wide authority: wrong one
        ctx = ssl.create_default_context(cafile=str(other_ca))
        try:  # without a client certificate: refused (TLS 1.3 tells the client once it reads)
            w = sasl_wire(ports["CERTS"], ctx)
            w.send_raw(request_frame(metadata_request(), 12, 1))
            assert w.read_frame() is None
        except (ssl.SSLError, ConnectionError):
            pass
        ctx.load_cert_chain(str(client_cert))
        w = sasl_wire(ports["CERTS"], ctx)
        assert w.request(metadata_request(), 12).brokers
        w.close()
    finally:
        thread.stop()

    bad = {**settings, "listener.name.internal.sasl.enabled.mechanisms": "GSSAPI"}
    with pytest.raises(ValueError, match=r"listener\.name\.internal\.sasl\.enabled\.mechanisms=.*GSSAPI"):
        BrokerConfig.from_settings(bad, data_dir=str(tmp_path / "data"))
