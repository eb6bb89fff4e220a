"""DTLS cipher suites the node offers, so peers with RSA certificates can connect.

aiortc offers only ECDHE-ECDSA suites. As the DTLS client (what aiortc is when it answers a
WHIP offer) that means a server with an RSA certificate — GStreamer's webrtcbin, for one — has
no suite in common with it and the handshake fails. The node also offers the ECDHE-RSA AEAD
suites, which are as strong. aiortc builds its SSL context in one method of its certificate
class, so this is process-wide: the app factory applies it once.
"""

from __future__ import annotations

from aiortc.rtcdtlstransport import RTCCertificate

CIPHERS = b":".join(
    [
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-ECDSA-AES128-SHA",
        b"ECDHE-ECDSA-AES256-SHA",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-AES256-GCM-SHA384",
        b"ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
_AIORTC_CONTEXT = RTCCertificate._create_ssl_context


def _context_with_rsa_suites(self, srtp_profiles):
    context = _AIORTC_CONTEXT(self, srtp_profiles)
    context.set_cipher_list(CIPHERS)
    return context


def offer_rsa_cipher_suites() -> None:
    RTCCertificate._create_ssl_context = _context_with_rsa_suites
