"""A SAML identity provider inside the test suite: its own RSA key and self-signed
certificate, responses built here and signed with xmlsec through python3-saml's
utilities, exactly as an IdP would post them to the ACS (faked at the wire: the HTTP
POST body)."""

import base64
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote_plus, urlparse
from xml.sax.saxutils import escape, quoteattr

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.utils import OneLogin_Saml2_Utils

SAME = object()  # an assertion's SubjectConfirmationData field as the rest of it says
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _keypair(common_name: str) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


class TestIdP:
    __test__ = False  # not a test class

    def __init__(self, entity_id="https://idp.example.test/saml", name="test-idp"):
        self.entity_id = entity_id
        self.sso_url = "https://idp.example.test/sso"
        self.slo_url = "https://idp.example.test/slo"
        self.key, self.cert = _keypair(name)

    def metadata(self) -> str:
        body = "".join(line for line in self.cert.splitlines() if "CERTIFICATE" not in line)
        return f"""<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{self.entity_id}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
      <ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>
    </md:KeyDescriptor>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{self.sso_url}"/>
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{self.slo_url}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"""

    # -------------------------------------------------------------------- the SP's request
    @staticmethod
    def authn_request_id(redirect_url: str) -> str:
        """The ID of the AuthnRequest the SP put in its redirect (HTTP-Redirect binding)."""
        query = parse_qs(urlparse(redirect_url).query)
        xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
        start = xml.index(' ID="') + 5
        return xml[start : xml.index('"', start)]

    # -------------------------------------------------------------------- responses
    def assertion(
        self,
        *,
        sp_entity_id: str,
        acs_url: str,
        in_response_to: str | None,
        name_id: str,
        attributes: dict[str, list[str]] | None = None,
        assertion_id: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        recipient: str | None = None,
        not_before: datetime | None = None,
        not_on_or_after: datetime | None = None,
        scd_in_response_to=SAME,
        scd_not_on_or_after=SAME,
        conditions_not_on_or_after=SAME,
        audience_restrictions: list[list[str]] | None = None,
    ) -> str:
        """A bearer assertion. The SubjectConfirmationData's InResponseTo and NotOnOrAfter,
        and the Conditions' NotOnOrAfter, follow `in_response_to` and `not_on_or_after`
        unless given (None leaves them out); `audience_restrictions` replaces the one
        AudienceRestriction ([] for none)."""
        now = datetime.now(UTC)
        not_before = not_before or now - timedelta(minutes=1)
        not_on_or_after = not_on_or_after or now + timedelta(minutes=5)
        scd_irt = in_response_to if scd_in_response_to is SAME else scd_in_response_to
        irt = f" InResponseTo={quoteattr(scd_irt)}" if scd_irt else ""
        scd_until = not_on_or_after if scd_not_on_or_after is SAME else scd_not_on_or_after
        scd_nooa = f' NotOnOrAfter="{_time(scd_until)}"' if scd_until else ""
        cond_until = (
            not_on_or_after if conditions_not_on_or_after is SAME else conditions_not_on_or_after
        )
        cond_nooa = f' NotOnOrAfter="{_time(cond_until)}"' if cond_until else ""
        if audience_restrictions is None:
            audience_restrictions = [[audience or sp_entity_id]]
        restrictions = "".join(
            "<saml:AudienceRestriction>"
            + "".join(f"<saml:Audience>{escape(a)}</saml:Audience>" for a in audiences)
            + "</saml:AudienceRestriction>"
            for audiences in audience_restrictions
        )
        attrs = "".join(
            f"<saml:Attribute Name={quoteattr(name)}>"
            + "".join(
                f'<saml:AttributeValue xmlns:xs="http://www.w3.org/2001/XMLSchema" '
                f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                f'xsi:type="xs:string">{escape(v)}</saml:AttributeValue>'
                for v in values
            )
            + "</saml:Attribute>"
            for name, values in (attributes or {}).items()
        )
        statement = f"<saml:AttributeStatement>{attrs}</saml:AttributeStatement>" if attrs else ""
        return (
            f'<saml:Assertion xmlns:saml="{SAML}" ID="{assertion_id or "_a" + uuid.uuid4().hex}" '
            f'Version="2.0" IssueInstant="{_time(now)}">'
            f"<saml:Issuer>{escape(issuer or self.entity_id)}</saml:Issuer>"
            f"<saml:Subject>"
            f'<saml:NameID Format="{C.NAMEID_EMAIL_ADDRESS}">{escape(name_id)}</saml:NameID>'
            f'<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
            f"<saml:SubjectConfirmationData{scd_nooa} "
            f"Recipient={quoteattr(recipient or acs_url)}{irt}/>"
            f"</saml:SubjectConfirmation></saml:Subject>"
            f'<saml:Conditions NotBefore="{_time(not_before)}"{cond_nooa}>'
            f"{restrictions}</saml:Conditions>"
            f'<saml:AuthnStatement AuthnInstant="{_time(now)}" SessionIndex="_s{uuid.uuid4().hex}">'
            f"<saml:AuthnContext><saml:AuthnContextClassRef>"
            f"urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
            f"</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"
            f"{statement}</saml:Assertion>"
        )

    def sign(self, xml: str, *, sha1: bool = False) -> str:
        """Enveloped signature over the element's root, as an IdP signs an assertion."""
        signed = OneLogin_Saml2_Utils.add_sign(
            xml,
            self.key,
            self.cert,
            sign_algorithm=C.RSA_SHA1 if sha1 else C.RSA_SHA256,
            digest_algorithm=C.SHA1 if sha1 else C.SHA256,
        )
        signed = signed.decode() if isinstance(signed, bytes) else signed
        return signed.replace('<?xml version="1.0"?>\n', "").replace('<?xml version="1.0"?>', "")

    @staticmethod
    def response(
        assertion_xml: str,
        *,
        acs_url: str,
        in_response_to: str | None,
        issuer: str,
        destination: str | None = None,
        extensions: str = "",
    ) -> str:
        irt = f" InResponseTo={quoteattr(in_response_to)}" if in_response_to else ""
        return (
            f'<samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_r{uuid.uuid4().hex}" '
            f'Version="2.0" IssueInstant="{_time(datetime.now(UTC))}" '
            f"Destination={quoteattr(destination or acs_url)}{irt}>"
            f"<saml:Issuer>{escape(issuer)}</saml:Issuer>"
            f"{extensions}"
            f'<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>'
            f"</samlp:Status>{assertion_xml}</samlp:Response>"
        )

    def signed_response(self, *, sha1=False, **assertion_kwargs) -> str:
        """The usual case: a Response whose assertion is signed."""
        assertion = self.sign(self.assertion(**assertion_kwargs), sha1=sha1)
        return self.response(
            assertion,
            acs_url=assertion_kwargs["acs_url"],
            in_response_to=assertion_kwargs.get("in_response_to"),
            issuer=self.entity_id,
        )

    def response_signed_only(self, **assertion_kwargs) -> str:
        """A Response signed as a whole (enveloped, over its root), its assertion unsigned:
        what Google Workspace sends with "Signed response"."""
        return self.sign(
            self.response(
                self.assertion(**assertion_kwargs),
                acs_url=assertion_kwargs["acs_url"],
                in_response_to=assertion_kwargs.get("in_response_to"),
                issuer=self.entity_id,
            )
        )

    def logout_request_xml(
        self,
        *,
        sls_url: str,
        name_id: str,
        session_index: str | None = None,
        issue_instant: datetime | None = None,
    ) -> str:
        index = (
            f"<samlp:SessionIndex>{escape(session_index)}</samlp:SessionIndex>"
            if session_index
            else ""
        )
        return (
            f'<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" '
            f'ID="_l{uuid.uuid4().hex}" Version="2.0" '
            f'IssueInstant="{_time(issue_instant or datetime.now(UTC))}" '
            f'Destination="{sls_url}">'
            f"<saml:Issuer>{escape(self.entity_id)}</saml:Issuer>"
            f'<saml:NameID Format="{C.NAMEID_EMAIL_ADDRESS}">{escape(name_id)}</saml:NameID>'
            f"{index}</samlp:LogoutRequest>"
        )

    def logout_request(self, *, sls_url: str, name_id: str, **kwargs) -> str:
        """An unsigned LogoutRequest, deflated and base64 (HTTP-Redirect binding)."""
        xml = self.logout_request_xml(sls_url=sls_url, name_id=name_id, **kwargs)
        return OneLogin_Saml2_Utils.deflate_and_base64_encode(xml)

    def redirect_query(self, kind: str, xml: str, relay_state: str | None = None) -> str:
        """The query string of a signed HTTP-Redirect message: the signature covers
        SAMLRequest (or SAMLResponse), RelayState and SigAlg, URL-encoded, in that order."""
        parts = [(kind, OneLogin_Saml2_Utils.deflate_and_base64_encode(xml))]
        if relay_state is not None:
            parts.append(("RelayState", relay_state))
        parts.append(("SigAlg", C.RSA_SHA256))
        signed = "&".join(f"{k}={quote_plus(v)}" for k, v in parts)
        signature = OneLogin_Saml2_Utils.sign_binary(signed, self.key, xmlsec.Transform.RSA_SHA256)
        return f"{signed}&Signature={quote_plus(base64.b64encode(signature).decode())}"

    def signed_logout_request(self, *, sls_url: str, name_id: str, **kwargs) -> str:
        """A LogoutRequest signed the Redirect-binding way: the query string to GET."""
        xml = self.logout_request_xml(sls_url=sls_url, name_id=name_id, **kwargs)
        return self.redirect_query("SAMLRequest", xml)

    def posted_logout_request(self, *, sls_url: str, name_id: str, **kwargs) -> str:
        """A LogoutRequest signed the POST-binding way (enveloped XML signature), base64."""
        xml = self.logout_request_xml(sls_url=sls_url, name_id=name_id, **kwargs)
        return b64(self.sign(xml))


def b64(xml: str) -> str:
    return base64.b64encode(xml.encode()).decode()
