#!/usr/bin/python3
"""The SMTP server docker-watcher's email notifications are tested against (Debian's
python3-aiosmtpd). Started by scripts/services.sh; not for production.

Two listeners on loopback, both requiring AUTH (user and password from the arguments) and both
delivering into one maildir:
  - STARTTLS: plain SMTP that refuses MAIL before STARTTLS (port 47025 by default);
  - implicit TLS ("SMTPS", port 47465 by default).

    smtp-test-server.py MAILDIR CERT KEY STARTTLS_PORT TLS_PORT USER PASSWORD
"""

import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    maildir, cert, key, starttls_port, tls_port, user, password = sys.argv[1:8]
    expected = (user.encode(), password.encode())

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == expected
        return AuthResult(success=ok)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    common = dict(authenticator=authenticator, auth_required=True)
    starttls = Controller(
        Mailbox(maildir),
        hostname="127.0.0.1",
        port=int(starttls_port),
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        **common,
    )
    implicit = Controller(
        Mailbox(maildir),
        hostname="127.0.0.1",
        port=int(tls_port),
        ssl_context=context,
        # aiosmtpd counts only STARTTLS as TLS; this whole connection is TLS.
        auth_require_tls=False,
        **common,
    )
    starttls.start()
    implicit.start()
    print(f"smtp-test-server: STARTTLS on 127.0.0.1:{starttls_port}, TLS on 127.0.0.1:{tls_port}, maildir {maildir}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    finally:
        starttls.stop()
        implicit.stop()


if __name__ == "__main__":
    main()
