"""
The client side of TLS to the broker (C{amqps://}): which certificates the
broker's must chain to, and the certificate resmon presents if the broker
asks for one.
"""

import re

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


class TLSConfigurationError(ValueError):
    """
    A TLS option is unusable; C{option} names it (C{tls-ca}, ...).
    """

    def __init__(self, option, message):
        ValueError.__init__(self, message)
        self.option = option


def brokerTLSOptions(hostname, caFile=None, certFile=None, keyFile=None):
    """
    The TLS client options for a broker at C{hostname}: its certificate must
    be valid for C{hostname} (a name or an IP address, as in the URL) and
    chain to one of the certificates in C{caFile} (PEM), or, without one, to
    the system's trusted authorities. With C{certFile} (PEM), that
    certificate is presented to the broker, with the private key from
    C{keyFile} or, without one, from C{certFile} itself.

    @return: an L{IOpenSSLClientConnectionCreator}.
    @raise TLSConfigurationError: naming the option at fault.
    """
    from twisted.internet import ssl

    if caFile is not None:
        pems = _PEM_CERTIFICATE.findall(_read("tls-ca", caFile))
        if not pems:
            raise TLSConfigurationError("tls-ca", f"no PEM certificate in {caFile}")
        try:
            trustRoot = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem) for pem in pems])
        except Exception as e:
            raise TLSConfigurationError("tls-ca", f"{caFile}: not a valid certificate ({_first(e)})")
    else:
        trustRoot = ssl.platformTrust()
    clientCertificate = None
    if keyFile is not None and certFile is None:
        raise TLSConfigurationError("tls-key", "needs --tls-cert, the certificate of this key")
    if certFile is not None:
        certificate = _read("tls-cert", certFile)
        key = _read("tls-key", keyFile) if keyFile is not None else certificate
        try:
            clientCertificate = ssl.PrivateCertificate.loadPEM(certificate + b"\n" + key)
        except Exception as e:
            option = "tls-key" if keyFile is not None else "tls-cert"
            raise TLSConfigurationError(
                option, f"{keyFile or certFile}: no usable certificate and private key ({_first(e)})")
    try:
        return ssl.optionsForClientTLS(hostname, trustRoot=trustRoot, clientCertificate=clientCertificate)
    except Exception as e:
        option = "tls-cert" if certFile is not None else "broker"
        raise TLSConfigurationError(option, _first(e))


def _read(option, path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigurationError(option, f"cannot read {path}: {e.strerror}")


def _first(error):
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]
