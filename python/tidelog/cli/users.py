"""``tidelog users``: list, add and delete users' SCRAM credentials (AlterUserScramCredentials
and DescribeUserScramCredentials, as ``kafka-configs --entity-type users`` does). The password
is salted and hashed here; only the salted password goes to the broker, which keeps only the
keys derived from it."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO

from tidelog.cli._common import add_bootstrap, check, connect, run
from tidelog.client.connection import BrokerError
from tidelog.protocol import _messages as m
from tidelog.scram import MIN_ITERATIONS, ScramMechanism, new_salt, salted_password

MECHANISMS = [ScramMechanism.SCRAM_SHA_256.mechanism_name, ScramMechanism.SCRAM_SHA_512.mechanism_name]


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {args.user}: ")
    return sys.stdin.readline().rstrip("\n")


def users(args: argparse.Namespace, out: TextIO) -> int:
    D, A = m.DescribeUserScramCredentialsRequest, m.AlterUserScramCredentialsRequest
    with connect(args) as conn:
        if args.action == "list":
            named = [D.UserName(name=args.user)] if args.user else None
            r = conn.send(D(users=named))
            check(r.error_code, "describing users", r.error_message)
            for u in sorted(r.results, key=lambda u: u.user):
                check(u.error_code, f"user {u.user}", u.error_message)
                creds = ", ".join(
                    f"{ScramMechanism(i.mechanism).mechanism_name} (iterations={i.iterations})"
                    for i in u.credential_infos
                )
                out.write(f"{u.user}\t{creds}\n")
            return 0
        if not args.user:
            raise BrokerError(f"users {args.action} needs a user name")
        mechanism = ScramMechanism.of(args.mechanism or MECHANISMS[1])
        if args.action == "add":
            salt = new_salt()
            upsert = A.ScramCredentialUpsertion(
                name=args.user,
                mechanism=mechanism,
                iterations=args.iterations,
                salt=salt,
                salted_password=salted_password(mechanism, _password(args), salt, args.iterations),
            )
            requests = [A(deletions=[], upsertions=[upsert])]
        else:
            mechanisms = [mechanism]
            if args.mechanism is None:  # every mechanism the user has
                described = conn.send(D(users=[D.UserName(name=args.user)])).results[0]
                check(described.error_code, f"user {args.user}", described.error_message)
                mechanisms = [ScramMechanism(i.mechanism) for i in described.credential_infos]
            # One request each: Kafka refuses a user named twice in one request.
            deletions = [A.ScramCredentialDeletion(name=args.user, mechanism=x) for x in mechanisms]
            requests = [A(deletions=[d], upsertions=[]) for d in deletions]
        for req in requests:
            for result in conn.send(req).results:
                check(result.error_code, f"user {result.user}", result.error_message)
        out.write(f"{'added' if args.action == 'add' else 'deleted'} {args.user}\n")
    return 0


def add_parser(sub: Any) -> None:
    u = sub.add_parser("users", help="list, add and delete SCRAM users")
    u.add_argument("action", choices=["list", "add", "delete"])
    u.add_argument("user", nargs="?")
    u.add_argument("--mechanism", choices=MECHANISMS, default=None, help="add: SCRAM-SHA-512 unless given")
    u.add_argument("--iterations", type=int, default=MIN_ITERATIONS * 2)
    u.add_argument("--password", help="add: the password (default: read from the terminal or stdin)")
    add_bootstrap(u)
    u.set_defaults(func=lambda a: run(lambda: users(a, sys.stdout)))
