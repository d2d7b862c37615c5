"""SAML 2.0 single sign-on per org, with python3-saml in strict mode.

The SP side of each org lives under /sso/<slug>/ (metadata, login, acs, sls). Its URLs
are built from the incoming request (forwarded headers count only with BEHIND_PROXY), so
the metadata is right under any host name and port. A response is accepted only when:
it is under SSO_MAX_RESPONSE_BYTES, parses without a DTD or entities, answers a login this
site started for this org (InResponseTo, once, within SSO_REQUEST_TTL_S) unless the org
allows IdP-initiated login, passes python3-saml's strict checks (signed assertion by the
org's IdP certificate, no SHA-1, Issuer, NotBefore, NotOnOrAfter) and Bonito's stricter
ones (_check_assertion: an AudienceRestriction naming exactly this org's entity id, the
Destination and Recipient equal to this org's ACS URL, the assertion's own InResponseTo
naming the pending request, a NotOnOrAfter), carries an assertion id never seen before,
and names an email in one of the org's domains verified as its own (SSODomain) whose
groups map to a role. Every login, refusal and configuration change is audited with the
reason; the ACS page names the reason only when it is about the user.
"""

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
import zlib
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import import_module
from urllib.parse import unquote_plus, urlsplit

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.contrib.auth import logout
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from onelogin.saml2.logout_response import OneLogin_Saml2_Logout_Response
from onelogin.saml2.metadata import OneLogin_Saml2_Metadata
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

from core.client_ip import client_ip
from core.crypto import decrypt_json, encrypt_json
from core.models import columns_but
from core.text import name_cleaned, one_line
from orgs.audit import Actor, audit_record

from . import services
from .access import members_changed
from .models import (
    ROLE_RANK,
    Membership,
    Organization,
    Role,
    SSOAssertion,
    SSOAuthnRequest,
    SSOConfig,
    SSODomain,
    SSOSession,
    User,
)

log = logging.getLogger("bonito.sso")

# Attribute names each IdP sends by default (or that docs/sso.md tells you to configure).
PRESETS = {
    "okta": {"email": "email", "name": "name", "groups": "groups"},
    "azure_ad": {
        "email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        "name": "http://schemas.microsoft.com/identity/claims/displayname",
        "groups": "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
    },
    "google": {"email": "email", "name": "name", "groups": "groups"},
    "custom": {"email": "email", "name": "name", "groups": "groups"},
}
METADATA_MAX_BYTES = 512 * 1024
CONFIG_FIELDS = (
    "enabled",
    "preset",
    "idp_entity_id",
    "idp_sso_url",
    "idp_slo_url",
    "idp_x509_cert",
    "email_domains",
    "email_attribute",
    "name_attribute",
    "groups_attribute",
    "group_roles",
    "default_role",
    "sso_required",
    "allow_idp_initiated",
    "require_signed_logout",
    "signature_scope",
    "session_hours",
)


# What the ACS page says for any response that fails parsing, decryption or validation:
# one answer, so the page is no oracle (decryption failed or not: the precondition of the
# XML-Encryption CBC padding attack) and shows no library internals. The audit row and the
# server log keep the reason.
REFUSED_PAGE_REASON = (
    "This sign-in response was refused. Your administrator can see why in the audit log."
)


class SSORefused(Exception):
    """A login refused; `reason` goes to the audit log and the server log. The user sees it
    only when `public`: about the user (or what they should do), never about the message."""

    def __init__(self, reason: str, email: str = "", public: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.email = email
        self.public = public


# ------------------------------------------------------------------------------ SP settings
def sp_urls(request, org: Organization) -> dict:
    base = f"{request.scheme}://{request.get_host()}/sso/{org.slug}"
    return {
        "entity_id": f"{base}/metadata/",
        "metadata": f"{base}/metadata/",
        "login": f"{base}/login/",
        "acs": f"{base}/acs/",
        "sls": f"{base}/sls/",
    }


def request_data(request) -> dict:
    return {
        "https": "on" if request.is_secure() else "off",
        "http_host": request.get_host(),
        "script_name": request.path,
        "get_data": request.GET.copy(),
        "post_data": request.POST.copy(),
    }


def attribute_names(config: SSOConfig) -> dict:
    preset = PRESETS.get(config.preset, PRESETS["custom"])
    return {
        "email": config.email_attribute or preset["email"],
        "name": config.name_attribute or preset["name"],
        "groups": config.groups_attribute or preset["groups"],
    }


def saml_settings(config: SSOConfig, request, previous_key=False) -> OneLogin_Saml2_Settings:
    """python3-saml's settings for this org, with its SP key pair (the previous one, during
    a rotation's grace period, when `previous_key`: to decrypt for an IdP not yet rolled)."""
    urls = sp_urls(request, config.org)
    key, cert = sp_previous_keys(config) if previous_key else sp_keys(config)
    idp = {
        "entityId": config.idp_entity_id,
        "singleSignOnService": {"url": config.idp_sso_url, "binding": C.BINDING_HTTP_REDIRECT},
        "x509cert": config.idp_x509_cert,
    }
    if config.idp_slo_url:
        idp["singleLogoutService"] = {"url": config.idp_slo_url, "binding": C.BINDING_HTTP_REDIRECT}
    scope = config.signature_scope
    return OneLogin_Saml2_Settings(
        {
            "strict": True,
            "debug": False,
            "sp": {
                "entityId": urls["entity_id"],
                "assertionConsumerService": {"url": urls["acs"], "binding": C.BINDING_HTTP_POST},
                "singleLogoutService": {"url": urls["sls"], "binding": C.BINDING_HTTP_REDIRECT},
                "NameIDFormat": C.NAMEID_EMAIL_ADDRESS,
                "x509cert": cert,
                "privateKey": key,
            },
            "idp": idp,
            "security": {
                # Signed with the org's SP key (Okta's single logout requires it).
                "authnRequestsSigned": True,
                "logoutRequestSigned": True,
                "logoutResponseSigned": True,
                # What the IdP's signature must cover (python3-saml refuses a response
                # with no signature at all whatever these say).
                "wantAssertionsSigned": scope == SSOConfig.SignatureScope.ASSERTION,
                "wantMessagesSigned": scope == SSOConfig.SignatureScope.RESPONSE,
                # Encrypted assertions are decrypted with the SP key, not required.
                "wantAssertionsEncrypted": False,
                "wantNameId": True,
                "wantAttributeStatement": False,
                "wantXMLValidation": True,
                "rejectDeprecatedAlgorithm": True,  # no SHA-1 signatures or digests
                "requestedAuthnContext": False,
                "signatureAlgorithm": C.RSA_SHA256,
                "digestAlgorithm": C.SHA256,
                "allowRepeatAttributeName": True,
                # Self-hosted: an internal host name such as http://bonito:8000 is fine.
                "allowSingleLabelDomains": True,
            },
        },
        sp_validation_only=True,
    )


# No validUntil: python3-saml's default (two days) makes an IdP that imported the file
# refuse it afterwards. cacheDuration tells IdPs that poll it to fetch it again daily, so
# a rotated certificate reaches them within the rotation's grace period.
METADATA_CACHE_DURATION = "PT24H"


def sp_metadata(config: SSOConfig, request) -> str:
    """The SP metadata: signed AuthnRequests, and the org's certificate (and the previous
    one during a rotation's grace period) for signing and for encryption."""
    saml = saml_settings(config, request)
    metadata = OneLogin_Saml2_Metadata.builder(
        saml.get_sp_data(),
        authnsign=True,
        wsign=config.signature_scope == SSOConfig.SignatureScope.ASSERTION,
        valid_until="",
        cache_duration=METADATA_CACHE_DURATION,
    )
    certs = [config.sp_certificate]
    if sp_previous_keys(config)[1]:
        certs.append(config.sp_previous_certificate)
    for cert in certs:
        metadata = OneLogin_Saml2_Metadata.add_x509_key_descriptors(
            metadata, OneLogin_Saml2_Utils.format_cert(cert), add_encryption=True
        )
    errors = saml.validate_metadata(metadata)
    if errors:  # our own template: a bug, not user input
        raise RuntimeError(f"invalid SP metadata: {errors}")
    return metadata.decode() if isinstance(metadata, bytes) else metadata


# ------------------------------------------------------------------------------ SP key pair
SP_KEY_BITS = 3072
SP_CERT_DAYS = 3650  # IdPs do not check an SP certificate's dates; rotation replaces it


def _new_keypair(org: Organization) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=SP_KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bonito SSO {org.slug}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=SP_CERT_DAYS))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def _seal(key_pem: str) -> str:
    return encrypt_json({"private_key": key_pem})


def _unseal(token: str) -> str:
    return decrypt_json(token)["private_key"] if token else ""


def sp_keys(config: SSOConfig) -> tuple[str, str]:
    """The org's SP (private key PEM, certificate PEM), generated on first use."""
    if not config.sp_certificate:
        with transaction.atomic():
            locked = SSOConfig.objects.select_for_update().get(pk=config.pk)
            if not locked.sp_certificate:
                key, cert = _new_keypair(config.org)
                locked.sp_private_key, locked.sp_certificate = _seal(key), cert
                locked.save(update_fields=["sp_private_key", "sp_certificate"])
                audit_record(
                    actor=Actor(via="sso"),
                    org=config.org,
                    action="sso.sp_key_create",
                    target=locked,
                    after={"sp_cert_sha256": _fingerprint(cert)},
                )
        config.sp_private_key, config.sp_certificate = locked.sp_private_key, locked.sp_certificate
    return _unseal(config.sp_private_key), config.sp_certificate


def sp_previous_keys(config: SSOConfig) -> tuple[str, str]:
    """The pair a rotation replaced, while its grace period lasts; else ("", "")."""
    if config.sp_previous_until and config.sp_previous_until > timezone.now():
        return _unseal(config.sp_previous_private_key), config.sp_previous_certificate
    return "", ""


@transaction.atomic
def sp_key_rotate(*, actor: Actor, config: SSOConfig) -> SSOConfig:
    """A new SP key pair for the org, used at once; the old certificate stays in the
    metadata (and its key decrypts) for SSO_SP_CERT_GRACE_DAYS so the IdP can roll over."""
    config = SSOConfig.objects.select_for_update().get(pk=config.pk)
    before = {"sp_cert_sha256": _fingerprint(config.sp_certificate)}
    key, cert = _new_keypair(config.org)
    config.sp_previous_private_key = config.sp_private_key
    config.sp_previous_certificate = config.sp_certificate
    config.sp_previous_until = (
        timezone.now() + timedelta(days=settings.SSO_SP_CERT_GRACE_DAYS)
        if config.sp_certificate
        else None
    )
    config.sp_private_key, config.sp_certificate = _seal(key), cert
    config.save()
    audit_record(
        actor=actor,
        org=config.org,
        action="sso.sp_key_rotate",
        target=config,
        before=before,
        after={
            "sp_cert_sha256": _fingerprint(cert),
            "previous_published_until": config.sp_previous_until.isoformat()
            if config.sp_previous_until
            else None,
        },
    )
    return config


def sp_certificate_info(cert: str) -> dict:
    """Fingerprint and expiry of an SP certificate, for the settings page."""
    if not cert:
        return {}
    parsed = x509.load_pem_x509_certificate(cert.encode())
    return {
        "sha256": hashlib.sha256(parsed.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "not_after": parsed.not_valid_after_utc,
        "pem": cert,
    }


def safe_relay_state(value: str | None) -> str:
    """Only a relative path on this site: never another host, scheme or a //host URL."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return ""
    if not url_has_allowed_host_and_scheme(value, allowed_hosts=set(), require_https=False):
        return ""
    return value[:1000]


# ------------------------------------------------------------------------------ login
BROWSER_COOKIE = "bonito_sso"


def _hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def begin_login(request, config: SSOConfig, relay_state: str) -> tuple[str, str]:
    """An AuthnRequest to the org's IdP: (URL to send the browser to, browser nonce or "").

    Over HTTPS the view sets the nonce as a SameSite=None cookie (the IdP's POST to the
    ACS is cross-site, so the Lax session cookie does not come back with it); the
    response is then accepted only from that browser. Over plain HTTP (development)
    there is no such cookie, and the request id alone binds the response."""
    auth = OneLogin_Saml2_Auth(request_data(request), saml_settings(config, request))
    relay = safe_relay_state(relay_state) or f"/o/{config.org.slug}/"
    url = auth.login(return_to=relay)
    nonce = secrets.token_urlsafe(32) if request.is_secure() else ""
    SSOAuthnRequest.objects.create(
        request_id=auth.get_last_request_id(),
        org=config.org,
        relay_state=relay,
        browser_hash=_hash(nonce) if nonce else "",
    )
    cutoff = timezone.now() - timedelta(days=1)
    SSOAuthnRequest.objects.filter(created_at__lt=cutoff).delete()
    return url, nonce


def _decode(request):
    """The posted SAMLResponse, size-capped, decoded and parsed (its root element)."""
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > settings.SSO_MAX_RESPONSE_BYTES or len(request.body) > (
        settings.SSO_MAX_RESPONSE_BYTES
    ):
        raise SSORefused("The SAML response is larger than this site accepts.")
    if any(len(request.POST.getlist(name)) > 1 for name in ("SAMLResponse", "RelayState")):
        raise SSORefused("The form carries a SAML parameter more than once; refused.")
    encoded = request.POST.get("SAMLResponse", "")
    if not encoded:
        raise SSORefused("No SAML response was posted.")
    try:
        xml = base64.b64decode(encoded, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise SSORefused("The SAML response is not valid base64.") from exc
    try:
        root = OneLogin_Saml2_XML.to_etree(xml)  # refuses DTDs and entities (XXE)
    except Exception as exc:  # lxml errors, and python3-saml's refusal of DTDs/entities
        raise SSORefused(
            "The SAML response is not well-formed XML, or declares a DTD or entities."
        ) from exc
    return root


# ------------------------------------------------------------------------------ logout messages
LOGOUT_ROOTS = {"SAMLRequest": "LogoutRequest", "SAMLResponse": "LogoutResponse"}
SAML_PARAMS = ("SAMLRequest", "SAMLResponse", "RelayState", "SigAlg", "Signature")
_SAML_PARAM_KEYS = {name.lower(): name for name in SAML_PARAMS}
REDIRECT_SIG_ALGS = (C.RSA_SHA256, C.RSA_SHA384, C.RSA_SHA512)


def _plain_name(raw_name: str) -> str:
    """A query parameter's name as a lookalike-proof key: percent- and plus-decoded,
    letters and digits only, lower case (`%53AML+request` is `samlrequest`)."""
    return "".join(ch for ch in unquote_plus(raw_name) if ch.isalnum()).lower()


def redirect_params(query_string: str) -> dict[str, str]:
    """The SAML parameters of an HTTP-Redirect query string, still URL-encoded as sent,
    read once from the raw string (split on & and the first =): the signature is checked
    over these very bytes and the message decoded from the very same value. Django's
    request.GET (names decoded, last value wins) and python3-saml's signed-query rebuild
    (the raw parts starting with `SAMLRequest=`) read a polluted query differently, so
    a SAML parameter sent twice, or spelt another way (percent-encoded, another case,
    padded), is refused."""
    found: dict[str, str] = {}
    for part in query_string.split("&"):
        raw_name, _sep, value = part.partition("=")
        name = _SAML_PARAM_KEYS.get(_plain_name(raw_name))
        if name is None:
            continue
        if raw_name != name:
            raise SSORefused(
                f"The query string spells the SAML parameter {name} another way "
                f"({raw_name[:40]!r}); such a query is refused."
            )
        if name in found:
            raise SSORefused(f"The query string carries {name} more than once; refused.")
        found[name] = value
    return found


def logout_message_kind(request) -> str | None:
    """ "SAMLRequest" or "SAMLResponse" when the IdP sent one (GET: HTTP-Redirect binding,
    POST: HTTP-POST binding), else None (the user's own Log out button). A query naming
    one in any spelling counts (and is then refused by decode_logout)."""
    if request.method == "GET":
        names = {
            _plain_name(p.partition("=")[0])
            for p in request.META.get("QUERY_STRING", "").split("&")
        }
        return next((kind for kind in LOGOUT_ROOTS if kind.lower() in names), None)
    return next((kind for kind in LOGOUT_ROOTS if kind in request.POST), None)


@dataclass
class LogoutMessage:
    kind: str  # SAMLRequest or SAMLResponse
    binding: str
    root: object  # the parsed XML
    xml: bytes  # the message, decoded once: python3-saml is handed exactly this
    relay_state: str | None
    raw: dict = field(default_factory=dict)  # Redirect binding: the raw SAML parameters


def _message_params(request) -> tuple[str, str, str | None, dict]:
    """(kind, message as sent, RelayState, raw Redirect parameters) from one reading of
    the request."""
    if request.method == "GET":
        raw = redirect_params(request.META.get("QUERY_STRING", ""))
        plain = {name: unquote_plus(value) for name, value in raw.items()}
    else:
        for name in SAML_PARAMS:
            if len(request.POST.getlist(name)) > 1:
                raise SSORefused(f"The form carries {name} more than once; refused.")
        raw, plain = {}, request.POST
    kinds = [kind for kind in LOGOUT_ROOTS if kind in plain]
    if not kinds:
        raise SSORefused("No SAML logout message was sent.")
    if len(kinds) > 1:
        raise SSORefused("The message carries both a SAMLRequest and a SAMLResponse; refused.")
    return kinds[0], plain[kinds[0]], plain.get("RelayState"), raw


def decode_logout(request) -> LogoutMessage:
    """The IdP's logout message: size-capped before decoding, read once (see
    redirect_params), base64, inflated for the Redirect binding (bounded, so a deflate
    bomb stops at the cap), parsed without DTDs or entities, and of the element its name
    promises."""
    limit = settings.SSO_MAX_RESPONSE_BYTES
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit or (
        len(request.META.get("QUERY_STRING", "")) > limit
    ):
        raise SSORefused("The logout message is larger than this site accepts.")
    kind, encoded, relay_state, raw = _message_params(request)
    redirect_binding = request.method == "GET"
    try:
        decoded = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SSORefused(f"The {kind} is not valid base64.") from exc
    if redirect_binding:
        inflater = zlib.decompressobj(-15)
        try:
            xml = inflater.decompress(decoded, limit + 1)
        except zlib.error as exc:
            raise SSORefused(
                f"The {kind} is not DEFLATE-compressed (HTTP-Redirect binding)."
            ) from exc
        if len(xml) > limit or inflater.unconsumed_tail:
            raise SSORefused("The logout message is larger than this site accepts.")
    else:
        xml = decoded
    if not xml.strip():
        raise SSORefused(f"The {kind} is empty.")
    try:
        root = OneLogin_Saml2_XML.to_etree(xml)  # refuses DTDs and entities (XXE)
    except Exception as exc:
        raise SSORefused(
            f"The {kind} is not well-formed XML, or declares a DTD or entities."
        ) from exc
    expected = LOGOUT_ROOTS[kind]
    if root.tag != f"{{{C.NS_SAMLP}}}{expected}":
        raise SSORefused(f"The {kind} is not a SAML {expected}.")
    return LogoutMessage(
        kind=kind,
        binding=C.BINDING_HTTP_REDIRECT if redirect_binding else C.BINDING_HTTP_POST,
        root=root,
        xml=xml,
        relay_state=relay_state,
        raw=raw,
    )


def _logout_data(request, message: LogoutMessage) -> dict:
    """python3-saml's request data, its parameters the ones decode_logout read (never
    Django's own parse of the query string)."""
    params = {name: unquote_plus(value) for name, value in message.raw.items()}
    return {
        **request_data(request),
        "get_data": params if message.binding == C.BINDING_HTTP_REDIRECT else {},
    }


def _check_redirect_signature(message: LogoutMessage, config: SSOConfig) -> bool:
    """Whether the Redirect-binding query is signed; a signature that is there must verify
    against the IdP's certificate over exactly the raw `kind=..[&RelayState=..]&SigAlg=..`
    parts the message was decoded from, with SHA-256 or stronger."""
    raw, kind = message.raw, message.kind
    if "Signature" not in raw:
        return False
    algorithm = unquote_plus(raw.get("SigAlg", ""))
    if algorithm in C.DEPRECATED_ALGORITHMS:
        raise SSORefused(f"The {kind} is signed with a deprecated algorithm (SHA-1).")
    if algorithm not in REDIRECT_SIG_ALGS:
        raise SSORefused(f"The {kind}'s signature has no SigAlg this site accepts (RSA-SHA256+).")
    signed = "&".join(
        f"{name}={raw[name]}" for name in (kind, "RelayState", "SigAlg") if name in raw
    )
    try:
        signature = base64.b64decode("".join(unquote_plus(raw["Signature"]).split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SSORefused(f"The {kind}'s Signature is not valid base64.") from exc
    if not OneLogin_Saml2_Utils.validate_binary_sign(
        signed, signature, OneLogin_Saml2_Utils.format_cert(config.idp_x509_cert), algorithm
    ):
        raise SSORefused(f"Signature validation failed: the {kind} was not signed by the IdP.")
    return True


def _check_xml_signature(root, config: SSOConfig, kind: str) -> bool:
    """Whether the message carries an enveloped XML signature (HTTP-POST binding); a
    signature that is there must be the only one, cover the whole message, use no SHA-1
    and verify against the IdP's certificate."""
    signatures = root.findall(f"{{{C.NS_DS}}}Signature")
    if not signatures:
        return False
    message_id = root.get("ID")
    references = signatures[0].findall(f"{{{C.NS_DS}}}SignedInfo/{{{C.NS_DS}}}Reference")
    if (
        len(signatures) != 1
        or not message_id
        or len(references) != 1
        or references[0].get("URI") != f"#{message_id}"
    ):
        raise SSORefused(f"The {kind}'s signature does not cover the whole message.")
    algorithms = {
        node.get("Algorithm")
        for tag in ("SignatureMethod", "DigestMethod")
        for node in signatures[0].iter(f"{{{C.NS_DS}}}{tag}")
    }
    if algorithms & set(C.DEPRECATED_ALGORITHMS):
        raise SSORefused(f"The {kind} is signed with a deprecated algorithm (SHA-1).")
    xmlsec.tree.add_ids(root, ["ID"])
    if not OneLogin_Saml2_Utils.validate_node_sign(
        signatures[0],
        root,
        OneLogin_Saml2_Utils.format_cert(config.idp_x509_cert),  # metadata gives bare base64
        raise_exceptions=False,
    ):
        raise SSORefused(f"Signature validation failed: the {kind} was not signed by the IdP.")
    return True


def _check_signed(message: LogoutMessage, config: SSOConfig) -> None:
    kind = message.kind
    signed = message.binding == C.BINDING_HTTP_REDIRECT and _check_redirect_signature(
        message, config
    )
    signed = _check_xml_signature(message.root, config, kind) or signed
    if not signed and config.require_signed_logout:
        raise SSORefused(
            f"The {kind} is not signed, and this organization requires signed logout "
            "messages from its IdP."
        )


def _fresh_logout_request(root, config: SSOConfig) -> None:
    """A LogoutRequest is acted on once, and only while young: a leaked logout link
    cannot be replayed later."""
    try:
        issued = OneLogin_Saml2_Utils.parse_SAML_to_time(root.get("IssueInstant", ""))
    except Exception as exc:
        raise SSORefused("The LogoutRequest has no valid IssueInstant.") from exc
    now = time.time()
    if issued < now - settings.SSO_REQUEST_TTL_S or issued > now + 180:
        raise SSORefused("The LogoutRequest is too old, or issued in the future.")
    try:
        with transaction.atomic():
            SSOAssertion.objects.create(
                assertion_id=f"logout:{root.get('ID', '')}"[:200],
                org=config.org,
                not_on_or_after=datetime.fromtimestamp(issued + settings.SSO_REQUEST_TTL_S, UTC),
            )
    except IntegrityError as exc:
        raise SSORefused("This LogoutRequest was already used (a replay).") from exc


def _names(info: dict, name_id: str, indexes: list[str]) -> bool:
    return info.get("name_id") == name_id and (not indexes or info.get("session_index") in indexes)


def logout_message_process(request, config: SSOConfig) -> str:
    """Check the IdP's logout message and act on it; returns where to send the browser.
    Everything below reads the one LogoutMessage decode_logout made."""
    message = decode_logout(request)
    _check_signed(message, config)
    data = _logout_data(request, message)
    saml = saml_settings(config, request)
    if message.kind == "SAMLResponse":
        return _logout_response(request, config, saml, data, message)
    return _logout_request(request, config, saml, data, message)


def _for_python3_saml(message: LogoutMessage) -> str:
    """The decoded message re-encoded for python3-saml's constructors, which would
    otherwise decode the request's value their own way."""
    return OneLogin_Saml2_Utils.deflate_and_base64_encode(message.xml)


def _logout_response(request, config, saml, data, message: LogoutMessage) -> str:
    """The IdP's answer to the logout this site started (our session already ended)."""
    pending = request.session.pop(LOGOUT_SESSION_KEY, None) or {}
    if pending.get("org") != config.org.slug:
        raise SSORefused("This LogoutResponse answers no logout this site started.")
    response = OneLogin_Saml2_Logout_Response(saml, _for_python3_saml(message))
    try:
        valid = response.is_valid(data, request_id=pending.get("id"))
    except Exception as exc:
        raise SSORefused(f"Single logout refused: {exc}") from exc
    if not valid:
        raise SSORefused(f"Single logout refused: {response.get_error()}")
    if response.get_status() != C.STATUS_SUCCESS:
        log.warning("SSO: %s's IdP could not end its session: %s", config, response.get_status())
    return "/login/"


def _logout_request(request, config, saml, data, message: LogoutMessage) -> str:
    """The IdP ends a user's session: end the Bonito sessions that user's sign-ins opened
    (in any browser) and answer with a LogoutResponse. When this browser is signed in
    through this org's IdP as someone else, the request is not for it: nothing is ended
    and the answer says Requester (a crafted link cannot log a victim out)."""
    root = message.root
    logout_request = OneLogin_Saml2_Logout_Request(saml, _for_python3_saml(message))
    try:
        valid = logout_request.is_valid(data)
    except Exception as exc:
        raise SSORefused(f"Single logout refused: {exc}") from exc
    if not valid:
        raise SSORefused(f"Single logout refused: {logout_request.get_error()}")
    try:
        name_id = OneLogin_Saml2_Logout_Request.get_nameid(root, saml.get_sp_key())
    except Exception as exc:
        raise SSORefused(f"Single logout refused: {exc}") from exc
    indexes = OneLogin_Saml2_Logout_Request.get_session_indexes(root)
    _fresh_logout_request(root, config)

    actor = Actor(ip=client_ip(request), via="sso")
    info = request.session.get(SSO_SESSION_KEY) or {}
    here = request.user.is_authenticated and info.get("org") == config.org.slug
    if here and not _names(info, name_id, indexes):
        status = C.STATUS_REQUESTER
        audit_refusal(
            request,
            config.org,
            "The IdP's LogoutRequest names another user or session than the one signed in "
            "in this browser; no session was ended.",
            name_id,
        )
    else:
        status = C.STATUS_SUCCESS
        ended = sessions_end(config, name_id, indexes)
        if here:
            logout(request)
        audit_record(
            actor=actor,
            org=config.org,
            action="sso.logout",
            target=config,
            after={"by": "idp", "name_id": name_id, "sessions_ended": ended},
        )
    builder = OneLogin_Saml2_Logout_Response(saml)
    builder.build(logout_request.id, status=status)
    params = {"SAMLResponse": builder.get_response()}
    if message.relay_state:
        params["RelayState"] = message.relay_state
    security = saml.get_security_data()
    if security["logoutResponseSigned"]:
        auth = OneLogin_Saml2_Auth(data, saml)
        auth.add_response_signature(params, security["signatureAlgorithm"])
    target = saml.get_idp_slo_response_url()
    if not target:  # the IdP takes no answer: never follow its RelayState elsewhere
        return "/login/"
    return OneLogin_Saml2_Utils.redirect(target, params, request_data=data)


# ------------------------------------------------------------------------------ sessions
SSO_SESSION_KEY = "sso"  # the SSO sign-in's NameID and SessionIndex, in the Django session
LOGOUT_SESSION_KEY = "sso_logout"  # the LogoutRequest this site sent, awaiting its answer


def session_opened(request, config: SSOConfig, user: User, info: dict) -> None:
    """Record the session an SSO sign-in opened, so the IdP's logout can find it."""
    request.session[SSO_SESSION_KEY] = info
    if not request.session.session_key:
        request.session.save()
    now = timezone.now()
    SSOSession.objects.filter(expires_at__lt=now).delete()
    SSOSession.objects.update_or_create(
        session_key=request.session.session_key,
        defaults={
            "org": config.org,
            "user": user,
            "name_id": info.get("name_id") or "",
            "session_index": info.get("session_index") or "",
            "expires_at": request.session.get_expiry_date(),  # the session's own end
        },
    )


def sessions_end(config: SSOConfig, name_id: str, indexes: list[str]) -> int:
    """End the Bonito sessions opened by this org's SSO sign-ins for `name_id` (those with
    one of `indexes`, when the IdP names any); returns how many. As at a sign-out, the
    live-tail sockets of every org these users belong to re-check at once (a socket
    opened with an ended session then closes) instead of at their next periodic check."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    rows = SSOSession.objects.filter(org=config.org, name_id=name_id)
    if indexes:
        rows = rows.filter(session_index__in=indexes)
    ended = list(rows.values_list("session_key", "user_id"))
    with transaction.atomic():
        for key, _user in ended:
            store(session_key=key).delete()
        rows.delete()
        members_changed(
            Membership.objects.filter(user_id__in={user for _key, user in ended}).values_list(
                "org_id", flat=True
            )
        )
    return len(ended)


def session_closed(request) -> None:
    if request.session.session_key:
        SSOSession.objects.filter(session_key=request.session.session_key).delete()


def logout_begin(request, config: SSOConfig) -> str | None:
    """The user's Log out: end this session and, when the IdP has a logout URL and the
    session came from its sign-in, a signed LogoutRequest to end the IdP's session too
    (its id kept in the fresh session, so only its answer is accepted)."""
    info = request.session.get(SSO_SESSION_KEY) or {}
    if request.user.is_authenticated:
        audit_record(
            actor=Actor(user=request.user, ip=client_ip(request), via="sso"),
            org=config.org,
            action="sso.logout",
            target=config,
            after={"by": "user"},
        )
    session_closed(request)
    logout(request)
    if not (config.idp_slo_url and info.get("org") == config.org.slug):
        return None
    auth = OneLogin_Saml2_Auth(request_data(request), saml_settings(config, request))
    url = auth.logout(
        return_to=request.build_absolute_uri("/login/"),
        name_id=info.get("name_id"),
        session_index=info.get("session_index"),
        name_id_format=info.get("name_id_format"),
    )
    request.session[LOGOUT_SESSION_KEY] = {
        "org": config.org.slug,
        "id": auth.get_last_request_id(),
    }
    return url


def _pending_request(request, config: SSOConfig, in_response_to: str | None):
    if not in_response_to:
        if not config.allow_idp_initiated:
            raise SSORefused(
                "This response was not asked for by this site (IdP-initiated login is off "
                "for this organization). Start from the sign-in page.",
                public=True,
            )
        return None
    fresh = timezone.now() - timedelta(seconds=settings.SSO_REQUEST_TTL_S)
    pending = SSOAuthnRequest.objects.filter(
        org=config.org, request_id=in_response_to, used_at__isnull=True, created_at__gte=fresh
    ).first()
    if pending is None:
        raise SSORefused(
            "The response's InResponseTo does not match a sign-in this site started for this "
            "organization (or that sign-in was already used or has expired)."
        )
    if pending.browser_hash:
        nonce = request.COOKIES.get(BROWSER_COOKIE, "")
        if not nonce or not hmac.compare_digest(_hash(nonce), pending.browser_hash):
            raise SSORefused(
                "This sign-in was started in another browser. Start it again from this one.",
                public=True,
            )
    return pending


def _role_for(config: SSOConfig, groups: list[str]) -> str | None:
    mapped = [config.group_roles[g] for g in groups if g in config.group_roles]
    mapped = [r for r in mapped if r in Role.values]
    if mapped:
        return max(mapped, key=lambda r: ROLE_RANK[r])
    return config.default_role or None


def _no_role_reason(email: str, groups: list[str]) -> str:
    return (
        f"{email} is in no group that has a role in this organization "
        f"(groups sent: {', '.join(groups) or 'none'})."
    )


def _email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].lower()


class _Response(OneLogin_Saml2_Response):
    """python3-saml's response, decrypting an EncryptedAssertion detached from the
    document. python3-saml decrypts it in place, where libxml2 folds the assertion's own
    namespace prefixes into the response's (encas2: becomes ns1:); that changes the
    assertion's exclusive canonical form and so breaks its signature (pysaml2-based IdPs
    send such self-contained assertions): decrypted detached, the assertion keeps them."""

    def _decrypt_assertion(self, xml):
        nodes = OneLogin_Saml2_XML.query(xml, "/samlp:Response/saml:EncryptedAssertion")
        data = OneLogin_Saml2_XML.query(nodes[0], "./xenc:EncryptedData") if nodes else []
        if len(data) != 1 or not OneLogin_Saml2_XML.query(data[0], "./ds:KeyInfo/*"):
            return super()._decrypt_assertion(xml)  # its own checks and errors
        key_info = OneLogin_Saml2_XML.query(data[0], "./ds:KeyInfo")[0]
        for method in OneLogin_Saml2_XML.query(key_info, "./ds:RetrievalMethod"):
            # The EncryptedKey beside the EncryptedData (Shibboleth, ADFS): bring it in.
            ref = (method.get("URI") or "").lstrip("#")
            key = OneLogin_Saml2_XML.query(nodes[0], "./xenc:EncryptedKey[@Id=$tagid]", None, ref)
            if key:
                key_info.append(deepcopy(key[0]))
        decrypted = OneLogin_Saml2_Utils.decrypt_element(
            data[0], self._settings.get_sp_key(), inplace=False
        )
        # Grafting an element into the tree would rename its prefixes to the ancestors'
        # for the same namespace; re-parsing the whole text keeps them as signed.
        marker = f"bonito-decrypted-{secrets.token_hex(8)}"
        xml.replace(nodes[0], etree.Comment(marker))
        text = etree.tostring(xml).replace(f"<!--{marker}-->".encode(), etree.tostring(decrypted))
        return OneLogin_Saml2_XML.to_etree(text)


class _Auth(OneLogin_Saml2_Auth):
    response_class = _Response
    valid_response: _Response | None = None  # the response python3-saml accepted

    def store_valid_response(self, response):
        self.valid_response = response
        super().store_valid_response(response)


def _process_response(request, config: SSOConfig, root, pending) -> "_Auth":
    """python3-saml's strict checks; an encrypted assertion is decrypted with the org's SP
    key, or, only when that fails during a rotation's grace period, with the previous one.
    A response that decrypts with the current key is judged with it alone, so the reason
    recorded is its own failure, never a retry's "failed to decrypt"."""
    encrypted = root.find(f"{{{C.NS_SAML}}}EncryptedAssertion") is not None
    tries = [False, True] if encrypted and sp_previous_keys(config)[1] else [False]
    first_error = None
    for previous_key in tries:
        auth = _Auth(
            request_data(request), saml_settings(config, request, previous_key=previous_key)
        )
        try:
            auth.process_response(request_id=pending.request_id if pending else None)
        except Exception as exc:  # raised while reading or decrypting (is_valid catches its own)
            first_error = first_error or exc
            continue
        return auth
    raise SSORefused(f"The SAML response was refused: {first_error}") from first_error


def _url_key(url: str | None):
    """A URL as this site compares it with its own: scheme and host in any case, a default
    port or none alike; everything else (path, query) exactly as written."""
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if port == {"http": 80, "https": 443}.get(scheme):
        port = None
    return (
        scheme,
        parts.username,
        parts.password,
        parts.hostname,
        port,
        parts.path,
        parts.query,
        parts.fragment,
    )


def _saml_time(value: str, what: str) -> float:
    try:
        return OneLogin_Saml2_Utils.parse_SAML_to_time(value)
    except Exception as exc:
        raise SSORefused(f"The assertion's {what} is not a valid time.") from exc


def _confirmation_refusal(confirmations, acs: str, wanted: str | None) -> SSORefused:
    """Why no SubjectConfirmationData fits (the first bearer one's fault), for the audit."""
    if not confirmations:
        return SSORefused("The assertion has no bearer SubjectConfirmationData.")
    scd = confirmations[0]
    recipient, answers = scd.get("Recipient"), scd.get("InResponseTo")
    if _url_key(recipient) != _url_key(acs):
        return SSORefused(
            f"The assertion's SubjectConfirmationData Recipient {(recipient or '')[:300]!r} "
            f"is not this organization's ACS URL {acs}."
        )
    if wanted and not answers:
        return SSORefused(
            "The assertion does not say which sign-in it answers (no InResponseTo in its "
            "SubjectConfirmationData), but the response claims to answer one: an assertion "
            "sent unasked cannot answer a sign-in this site started."
        )
    if wanted:
        return SSORefused(
            f"The assertion answers another sign-in ({answers[:100]!r}) than the one the "
            f"response claims to answer ({wanted!r})."
        )
    if answers:
        return SSORefused(
            f"The response was sent unasked, but its assertion answers a sign-in "
            f"({answers[:100]!r}): it was taken from another sign-in."
        )
    return SSORefused("The assertion's SubjectConfirmationData has expired or is not yet valid.")


def _check_assertion(request, config: SSOConfig, response: _Response, pending) -> datetime:
    """Bonito's checks on top of python3-saml's, on the very assertion it validated (the
    signed one, or the one inside the signed response). python3-saml matches the
    Destination as a prefix and the Recipient as a substring, takes an assertion with no
    AudienceRestriction, and reads InResponseTo from the Response (outside an assertion's
    signature). Returns until when the assertion id must be remembered (replays)."""
    urls = sp_urls(request, config.org)
    acs = urls["acs"]
    destination = response.document.get("Destination")
    if destination is not None and _url_key(destination) != _url_key(acs):
        raise SSORefused(
            f"The response's Destination {destination[:300]!r} is not this organization's "
            f"ACS URL {acs}."
        )
    restrictions = response._query_assertion("/saml:Conditions/saml:AudienceRestriction")
    if not restrictions:
        raise SSORefused(
            "The assertion has no AudienceRestriction: it must name this organization's "
            f"entity id {urls['entity_id']} as its audience."
        )
    for restriction in restrictions:
        audiences = [
            (OneLogin_Saml2_XML.element_text(node) or "").strip()
            for node in restriction.findall(f"{{{C.NS_SAML}}}Audience")
        ]
        if urls["entity_id"] not in audiences:
            raise SSORefused(
                f"The assertion's AudienceRestriction ({', '.join(audiences)[:300]}) does not "
                f"name this organization's entity id {urls['entity_id']}."
            )

    # The bearer confirmation must be for this ACS and answer exactly what this sign-in
    # is: the pending request (whatever the unsigned Response says), or nothing when the
    # response came unasked.
    wanted = pending.request_id if pending else None
    confirmations = [
        scd
        for sc in response._query_assertion("/saml:Subject/saml:SubjectConfirmation")
        if sc.get("Method") == C.CM_BEARER
        for scd in sc.findall(f"{{{C.NS_SAML}}}SubjectConfirmationData")
    ]
    now = OneLogin_Saml2_Utils.now()
    chosen = None
    for scd in confirmations:
        until, since = scd.get("NotOnOrAfter"), scd.get("NotBefore")
        if (
            _url_key(scd.get("Recipient")) == _url_key(acs)
            and scd.get("InResponseTo") == wanted
            and not (until and _saml_time(until, "NotOnOrAfter") <= now)
            and not (since and _saml_time(since, "NotBefore") > now)
        ):
            chosen = scd
            break
    if chosen is None:
        raise _confirmation_refusal(confirmations, acs, wanted)

    # python3-saml accepts the assertion until the later of the two limits (Conditions
    # with its clock drift allowance): the id is remembered that long.
    limits = [
        _saml_time(value, "NotOnOrAfter")
        for value in [chosen.get("NotOnOrAfter")]
        + [c.get("NotOnOrAfter") for c in response._query_assertion("/saml:Conditions")]
        if value
    ]
    if not limits:
        raise SSORefused(
            "The assertion has no NotOnOrAfter (neither in its SubjectConfirmationData, as the "
            "SAML Web SSO profile requires, nor in its Conditions): it would never expire."
        )
    return datetime.fromtimestamp(max(limits) + C.ALLOWED_CLOCK_DRIFT, UTC)


def consume(request, config: SSOConfig) -> tuple[User, Membership, str, dict]:
    """Check a posted SAML response; returns (user, membership, relay path, session info)."""
    root = _decode(request)
    pending = _pending_request(request, config, root.get("InResponseTo"))

    auth = _process_response(request, config, root, pending)
    if auth.get_errors() or not auth.is_authenticated():
        reason = auth.get_last_error_reason() or ", ".join(auth.get_errors()) or "not authenticated"
        raise SSORefused(f"The SAML response was refused: {reason}")
    remember_until = _check_assertion(request, config, auth.valid_response, pending)

    attributes = auth.get_attributes()
    names = attribute_names(config)
    email = ((attributes.get(names["email"]) or [""])[0] or auth.get_nameid() or "").strip()
    email = email.lower()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise SSORefused(
            "The assertion carries no valid email address.", email, public=True
        ) from exc
    # The IdP may vouch only for domains this org lists *and* owns (verified): else any
    # org admin could point their own IdP at another org's domain and sign in as its users.
    domain, claimed = _email_domain(email), {d.lower() for d in config.email_domains}
    if domain not in claimed:
        raise SSORefused(
            f"{email} is not in this organization's email domains ({', '.join(sorted(claimed))}).",
            email,
            public=True,
        )
    if domain not in sign_in_domains(config):
        raise SSORefused(
            f"{email} is in {domain}, which is not verified for this organization: its IdP "
            "may sign in only users of domains a platform admin has verified for it.",
            email,
            public=True,
        )

    # Replay: each assertion id is accepted once, and remembered as long as it is valid.
    now = timezone.now()
    with transaction.atomic():
        SSOAssertion.objects.filter(not_on_or_after__lt=now).delete()
        try:
            with transaction.atomic():
                SSOAssertion.objects.create(
                    assertion_id=auth.get_last_assertion_id(),
                    org=config.org,
                    not_on_or_after=remember_until,
                )
        except IntegrityError as exc:
            raise SSORefused("This assertion was already used (a replay).", email) from exc
        if pending is not None:
            taken = SSOAuthnRequest.objects.filter(pk=pending.pk, used_at__isnull=True).update(
                used_at=now
            )
            if not taken:
                raise SSORefused("This sign-in was already completed (a replay).", email)

    groups = [g for g in attributes.get(names["groups"], []) if g]
    role = _role_for(config, groups)
    actor = Actor(ip=client_ip(request), via="sso")
    user = User.objects.filter(email__iexact=email).first()
    # The org admin chooses the IdP: it must not vouch for a platform admin (staff rights
    # over every org and the Django admin), nor for an email ADMIN_EMAILS would make one.
    if (user is not None and (user.is_staff or user.is_superuser)) or (
        email in settings.ADMIN_EMAILS
    ):
        raise SSORefused(
            f"{email} is a platform admin: platform admins sign in with their password, "
            "not through an organization's identity provider.",
            email,
            public=True,
        )
    existing = Membership.objects.for_org(config.org).filter(user=user).first() if user else None
    # The rule (docs/sso.md): the mapping is applied at every sign-in, except that the
    # break-glass owner is never demoted or removed (break-glass must work exactly when
    # the mapping is wrong) and the org's last admin keeps admin; they are signed in with
    # the membership they had, and the audit row says why.
    break_glass = existing is not None and config.break_glass_user_id == user.pk
    kept = ""
    if role is None:
        if existing is None:
            raise SSORefused(_no_role_reason(email, groups), email, public=True)
        if break_glass:
            kept = "break-glass owner"
        else:
            try:
                services.membership_remove(actor=actor, membership=existing)
            except ValidationError:
                kept = "last admin"
            else:
                raise SSORefused(_no_role_reason(email, groups), email, public=True)
    if user is not None and not user.is_active:
        raise SSORefused(f"The account {email} is deactivated.", email, public=True)

    # The IdP's, shown on Team pages: what the rule of names refuses is dropped, not refused
    display_name = name_cleaned(str((attributes.get(names["name"]) or [""])[0] or "")[:1000])[:150]
    with transaction.atomic():
        if user is None:
            user = services.user_create(actor=actor, email=email, password=None, name=display_name)
        elif display_name and user.name != display_name:
            user.name = display_name
            user.save(update_fields=["name"])
        if existing is None:
            membership = services.membership_add(actor=actor, org=config.org, user=user, role=role)
        elif kept or existing.role == role:
            membership = existing
        elif break_glass and ROLE_RANK[role] < ROLE_RANK[existing.role]:
            membership, kept = existing, "break-glass owner"
        else:
            try:
                membership = services.membership_set_role(
                    actor=actor, membership=existing, role=role, team=existing.team
                )
            except ValidationError:
                membership, kept = existing, "last admin"
        after = {"email": email, "role": membership.role, "groups": groups}
        if kept:
            after |= {"mapped_role": role, "kept_because": kept}
            log.warning("SSO: %s kept %s as the %s of %s", email, membership.role, kept, config)
        audit_record(
            actor=Actor(user=user, ip=actor.ip, via="sso"),
            org=config.org,
            action="sso.login",
            target=user,
            after=after,
        )
    relay = safe_relay_state(pending.relay_state if pending else request.POST.get("RelayState"))
    session = {
        "org": config.org.slug,
        "name_id": auth.get_nameid(),
        "name_id_format": auth.get_nameid_format(),
        "session_index": auth.get_session_index(),
    }
    return user, membership, relay or f"/o/{config.org.slug}/", session


def message_allowed(request, endpoint: str) -> bool:
    """At most SSO_ACS_PER_MINUTE SAML messages per endpoint ("acs", "sls", and "login":
    the sign-ins started, each an AuthnRequest row), client address and minute, so a flood
    of junk cannot fill the audit log or the requests table. The counter lives in the
    cache (Redis when set); if the cache is down the message is allowed (sign-in and
    logout must not depend on it)."""
    limit = settings.SSO_ACS_PER_MINUTE
    if not limit:
        return True
    key = f"bonito:sso-{endpoint}:{client_ip(request) or ''}:{int(time.time() // 60)}"
    try:
        if cache.add(key, 1, timeout=120):
            return True
        return cache.incr(key) <= limit
    except Exception:  # a dead cache never blocks sign-in
        log.warning("SSO: the rate-limit cache is unavailable; allowing the message")
        return True


def audit_refusal(request, org: Organization, reason: str, email: str = "") -> None:
    # One line: the reason may quote an unsigned response (its Issuer, its Destination),
    # which anyone can post, and a line break in it would forge log lines.
    log.warning(
        "SSO: refused for %s (%s): %s", org.slug, one_line(email) or "no email", one_line(reason)
    )
    audit_record(
        actor=Actor(ip=client_ip(request), via="sso"),
        org=org,
        action="sso.refused",
        target=getattr(org, "sso", None),
        after={"reason": reason, "email": email},
    )


# ------------------------------------------------------------------------------ configuration
def _clean(fields: dict) -> dict:
    out = dict(fields)
    if "email_domains" in out:
        out["email_domains"] = normalize_domains(out["email_domains"] or [])
    if "group_roles" in out:
        roles = out["group_roles"] or {}
        if not isinstance(roles, dict):
            raise ValidationError(
                "group_roles must map IdP group names to admin, member or viewer."
            )
        for group, role in roles.items():
            if role not in Role.values:
                raise ValidationError(
                    f"group_roles: {group!r} maps to {role!r}; use admin, member or viewer."
                )
        out["group_roles"] = {str(k): v for k, v in roles.items()}
    if out.get("default_role") is None and "default_role" in out:
        out["default_role"] = ""
    if out.get("idp_x509_cert"):
        out["idp_x509_cert"] = out["idp_x509_cert"].strip()
    return out


def metadata_fields(xml: str) -> dict:
    """Entity id, SSO/SLO URLs and signing certificate from IdP metadata XML."""
    try:
        parsed = OneLogin_Saml2_IdPMetadataParser.parse(
            xml.encode() if isinstance(xml, str) else xml,
            required_sso_binding=C.BINDING_HTTP_REDIRECT,
        )
    except Exception as exc:
        raise ValidationError(f"That IdP metadata could not be read: {exc}") from exc
    idp = parsed.get("idp") or {}
    cert = idp.get("x509cert") or next(
        iter((idp.get("x509certMulti") or {}).get("signing") or []), ""
    )
    fields = {
        "idp_entity_id": idp.get("entityId", ""),
        "idp_sso_url": (idp.get("singleSignOnService") or {}).get("url", ""),
        "idp_slo_url": (idp.get("singleLogoutService") or {}).get("url", ""),
        "idp_x509_cert": cert,
    }
    if not all(fields[k] for k in ("idp_entity_id", "idp_sso_url", "idp_x509_cert")):
        raise ValidationError(
            "That IdP metadata lacks an entity id, an HTTP-Redirect sign-on URL or a signing certificate."
        )
    return fields


def _summary(config: SSOConfig) -> dict:
    return {
        **{f: getattr(config, f) for f in CONFIG_FIELDS if f != "idp_x509_cert"},
        "idp_cert_sha256": _fingerprint(config.idp_x509_cert),
        "break_glass_user": config.break_glass_user.email if config.break_glass_user else None,
    }


def _cert_der(cert: str) -> bytes:
    """The DER bytes of a PEM or bare base64 certificate (binascii.Error if not base64)."""
    body = "".join(
        line.strip() for line in (cert or "").strip().splitlines() if "CERTIFICATE" not in line
    )
    return base64.b64decode(body)


def _fingerprint(cert: str) -> str:
    try:
        der = _cert_der(cert)
    except (binascii.Error, ValueError):
        return "unreadable"
    return hashlib.sha256(der).hexdigest()[:16] if der else ""


def sso_config_prepare(org: Organization, break_glass_email=None, **fields) -> SSOConfig:
    """The org's SSO configuration with `fields` applied and validated, not saved."""
    unknown = set(fields) - set(CONFIG_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown SSO setting(s): {', '.join(sorted(unknown))}.")
    fields = _clean(fields)
    config = SSOConfig.objects.filter(org=org).first() or SSOConfig(org=org)
    for name, value in fields.items():
        setattr(config, name, value)
    if break_glass_email is not None:
        if break_glass_email == "":
            config.break_glass_user = None
        else:
            member = (
                Membership.objects.for_org(org)
                .filter(user__email__iexact=break_glass_email, role=Role.ADMIN)
                .select_related("user")
                .first()
            )
            if member is None:
                raise ValidationError(
                    f"The break-glass owner {break_glass_email} must be an admin of {org.slug}."
                )
            config.break_glass_user = member.user
    if config.enabled and not config.email_domains:
        raise ValidationError("List at least one email domain that signs in through this IdP.")
    if config.sso_required and config.break_glass_user is None:
        raise ValidationError(
            "Name a break-glass owner (an admin who keeps password sign-in) before requiring SSO."
        )
    config.full_clean()
    _check_certificate(config.idp_x509_cert)
    for domain in config.email_domains:
        _check_domain(domain)
    _refuse_owned_elsewhere(org, config.email_domains)
    return config


DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def _check_domain(domain: str) -> None:
    if not DOMAIN_RE.match(domain):
        raise ValidationError(f"{domain!r} is not an email domain (such as acme.com).")


def normalize_domains(domains) -> list[str]:
    if isinstance(domains, str):
        domains = domains.replace(",", " ").split()
    if not isinstance(domains, list | tuple) or not all(isinstance(d, str) for d in domains):
        # The Django admin's JSON box also takes a number, NaN or an object.
        raise ValidationError('email_domains: a list of domains, e.g. ["acme.com"].')
    cleaned = sorted({str(d).strip().lower().lstrip("@").rstrip(".") for d in domains if d})
    for domain in cleaned:
        _check_domain(domain)
    return cleaned


def _refuse_owned_elsewhere(org: Organization, domains) -> None:
    """A domain verified for another org cannot be claimed or verified here; the message
    does not say which org (org admins must not learn who uses which domain)."""
    taken = sorted(
        SSODomain.objects.exclude(org=org)
        .filter(domain__in=domains)
        .values_list("domain", flat=True)
    )
    if taken:
        raise ValidationError(
            f"Email domain(s) {', '.join(taken)} are verified for another organization: "
            "they cannot sign in through this organization's IdP. Ask your platform admin "
            "if you own them."
        )


def verified_domains(org: Organization) -> list[str]:
    return list(SSODomain.objects.for_org(org).values_list("domain", flat=True))


def sign_in_domains(config: SSOConfig) -> set[str]:
    """The domains whose users this org's IdP may sign in: listed by the org and verified
    as its own."""
    return {d.lower() for d in config.email_domains} & set(verified_domains(config.org))


@transaction.atomic
def sso_domains_verify(*, actor: Actor, org: Organization, domains) -> list[str]:
    """Verify email domains as `org`'s (a platform admin, apply_config, or an org admin's
    claim with SSO_DOMAIN_VERIFICATION=trust); a domain verified for another org is
    refused. Returns the domains newly verified (audited as sso.domain_verify)."""
    domains = normalize_domains(domains)
    _refuse_owned_elsewhere(org, domains)
    have = set(verified_domains(org))
    added = [d for d in domains if d not in have]
    for domain in added:
        try:
            with transaction.atomic():
                SSODomain.objects.create(org=org, domain=domain)
        except IntegrityError as exc:  # verified elsewhere meanwhile
            raise ValidationError(
                f"Email domain {domain} was just verified for another organization."
            ) from exc
    if added:
        audit_record(
            actor=actor,
            org=org,
            action="sso.domain_verify",
            target=getattr(org, "sso", None) or org,
            before={"verified_domains": sorted(have)},
            after={"verified_domains": sorted(have | set(added))},
        )
    return added


@transaction.atomic
def sso_domains_unverify(*, actor: Actor, org: Organization, domains) -> list[str]:
    """Take verification back: the org's IdP no longer signs in users of these domains."""
    domains = normalize_domains(domains)
    have = set(verified_domains(org))
    removed = [d for d in domains if d in have]
    if removed:
        SSODomain.objects.for_org(org).filter(domain__in=removed).delete()
        audit_record(
            actor=actor,
            org=org,
            action="sso.domain_unverify",
            target=getattr(org, "sso", None) or org,
            before={"verified_domains": sorted(have)},
            after={"verified_domains": sorted(have - set(removed))},
        )
    return removed


def domains_status(config: SSOConfig | None) -> list[tuple[str, str]]:
    """(domain, "verified" | "waiting" | "elsewhere") for each domain the org lists."""
    if config is None:
        return []
    mine = set(verified_domains(config.org))
    taken = set(
        SSODomain.objects.exclude(org=config.org)
        .filter(domain__in=config.email_domains)
        .values_list("domain", flat=True)
    )
    return [
        (d, "verified" if d in mine else "elsewhere" if d in taken else "waiting")
        for d in config.email_domains
    ]


@transaction.atomic
def sso_config_save(
    *, actor: Actor, org: Organization, break_glass_email=None, verify_domains=False, **fields
):
    """Create or update an org's SSO configuration, validated and audited. Its listed
    email domains are only claims until verified, except with `verify_domains` (the
    operator's apply_config) or SSO_DOMAIN_VERIFICATION=trust."""
    current = SSOConfig.objects.filter(org=org).first()
    before = _summary(current) if current else None
    config = sso_config_prepare(org, break_glass_email, **fields)
    if config.pk is not None:
        # Its SP key pairs are not written back as read: that would undo a change made
        # since (reencrypt_secrets putting them under the newest key, the old one then
        # dropped; a rotation, its new key then paired with the old certificate).
        config.save(
            update_fields=columns_but(
                config,
                "sp_private_key",
                "sp_certificate",
                "sp_previous_private_key",
                "sp_previous_certificate",
                "sp_previous_until",
            )
        )
    else:
        config.save()
    org.sso = config
    after = _summary(config)
    if before != after:
        audit_record(
            actor=actor,
            org=org,
            action="sso.config_create" if before is None else "sso.config_update",
            target=config,
            before=before,
            after=after,
        )
    if verify_domains or settings.SSO_DOMAIN_VERIFICATION == "trust":
        sso_domains_verify(actor=actor, org=org, domains=config.email_domains)
    return config


def _check_certificate(cert: str) -> None:
    try:
        x509.load_der_x509_certificate(_cert_der(cert))
    except (ValueError, binascii.Error) as exc:
        raise ValidationError(
            "The IdP certificate is not a readable X.509 certificate (PEM or base64)."
        ) from exc


# ------------------------------------------------------------------------------ who uses SSO
def config_for_email(email: str) -> SSOConfig | None:
    """The enabled SSO of the org that lists and owns (verified) the email's domain."""
    domain = _email_domain(email or "")
    if not domain:
        return None
    config = (
        SSOConfig.objects.filter(enabled=True, org__sso_domains__domain=domain)
        .select_related("org")
        .first()
    )
    return config if config is not None and domain in config.email_domains else None


def _sso_required_for(email: str, configs) -> SSOConfig | None:
    """The first of ``configs`` (SSOConfig rows) that requires SSO for this email: SSO on
    and required, the email's domain listed and owned (verified) by the org, whose IdP can
    sign the user in instead (an org cannot lock out users of a domain not its own)."""
    domain = _email_domain(email or "")
    configs = configs.filter(
        enabled=True, sso_required=True, org__sso_domains__domain=domain
    ).select_related("org")
    return next((c for c in configs if domain in c.email_domains), None)


def sso_only_for(org: Organization, email: str) -> SSOConfig | None:
    """The org's SSO settings if a member with this email may not sign in with a password
    there; an invitation to such an org makes an account without a password."""
    return _sso_required_for(email, SSOConfig.objects.filter(org=org))


def password_blocked_by(user) -> SSOConfig | None:
    """The SSO-required org that keeps this user from signing in with a password, if any
    (but the break-glass owner's, and a platform admin's: no org's IdP signs one in)."""
    if user is None or user.pk is None:
        return None
    if user.is_staff or user.is_superuser or user.email.lower() in settings.ADMIN_EMAILS:
        return None
    configs = SSOConfig.objects.filter(org__memberships__user=user).exclude(break_glass_user=user)
    return _sso_required_for(user.email, configs)
