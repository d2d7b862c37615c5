"""Provider credentials for the agent: read inside the VPC, never sent to the control plane.

Sources, in the order they are merged (a later one wins, field by field):
a JSON file (BONITO_CREDENTIALS_FILE), AWS Secrets Manager (AWS_SECRETS_MANAGER_ARN),
Azure Key Vault (AZURE_KEY_VAULT_URL + AZURE_KEY_VAULT_SECRET), GCP Secret Manager
(GCP_SECRET_NAME), then environment variables BONITO_PROVIDER_<NAME>_<FIELD>. Each file or
secret holds one JSON document: {"<provider name>": {"<credential field>": "<value>"}}.

The cloud SDKs are an optional install (requirements-agent.txt) imported only when their
source is configured; a configured source whose SDK is missing stops the agent at start.

The control plane names each provider's endpoint; the credentials are the VPC's. So they
go only where the VPC's own configuration lets them (``endpoint_problem``): the vendor's
API hosts (the kind's ``ambient_hosts``), an address in BONITO_PROVIDER_ALLOWED_NETWORKS
written as such, or the endpoint the provider's document pins (``"endpoint"``, or
BONITO_PROVIDER_<NAME>_ENDPOINT). Elsewhere they are withheld, said in the log and the
heartbeat: an org admin (or a control plane not to be trusted) who moved the endpoint to a
host of their own would otherwise be sent them.
"""

import importlib
import json
import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

from gateway.dataplane import provider_kinds
from gateway.dataplane.credentials import ambient_host_problem
from gateway.dataplane.netpolicy import ip_literal, normalize_host, parse_networks

log = logging.getLogger("bonito.agent.credentials")

EXTRA = "pip install -r requirements-agent.txt"
PIN = "endpoint"  # a provider document's field: the one endpoint its credentials go to


class CredentialsError(RuntimeError):
    """A source cannot be read (missing SDK, no access, not the JSON shape expected).
    Its message names the source and never carries a credential."""


def env_name(provider: str, field: str) -> str:
    """BONITO_PROVIDER_<PROVIDER NAME UPPER, non-alphanumerics as _>_<FIELD UPPER>."""
    return f"BONITO_PROVIDER_{re.sub(r'[^0-9A-Za-z]', '_', provider).upper()}_{field.upper()}"


def parse_document(raw, where: str) -> dict:
    """{"provider": {"field": value}} from a secret's text; values that are mappings (a
    Vertex service-account key) are kept as JSON text, as the provider form stores them."""
    try:
        doc = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError:
        raise CredentialsError(f"{where} is not a JSON document") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise CredentialsError(
            f'{where} must be a JSON object of providers: {{"<provider name>": {{"<field>": "<value>"}}}}'
        )
    out = {}
    for provider, fields in doc.items():
        out[str(provider)] = {
            str(k): json.dumps(v) if isinstance(v, dict | list) else str(v)
            for k, v in fields.items()
            if v is not None
        }
    return out


def _sdk(module: str, source: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CredentialsError(
            f"{source} is configured but its SDK ({module}) is not installed: {EXTRA}"
        ) from None


class FileSource:
    name = "BONITO_CREDENTIALS_FILE"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.seen = None  # the file's (mtime, size, inode) when it was read last

    def check(self) -> None:
        """At start: the file is readable and holds the JSON document (the agent would
        otherwise serve without its credentials, every call to the provider refused)."""
        self.load()

    def stamp(self):
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        """Whether the file is not what was read last (rewritten, replaced, gone)."""
        return self.stamp() != self.seen

    def load(self) -> dict:
        self.seen = self.stamp()
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise CredentialsError(f"{self.name} {self.path}: {exc.strerror or exc}") from None
        return parse_document(raw, f"{self.name} {self.path}")


class AwsSecretsManagerSource:
    name = "AWS Secrets Manager"

    def __init__(self, arn: str):
        self.arn = arn

    def check(self) -> None:
        _sdk("boto3", self.name)

    def load(self) -> dict:
        boto3 = _sdk("boto3", self.name)
        region = None
        parts = self.arn.split(":")
        if len(parts) > 4 and parts[0] == "arn":
            region = parts[3] or None  # arn:aws:secretsmanager:<region>:…
        try:
            client = boto3.client("secretsmanager", region_name=region)
            answer = client.get_secret_value(SecretId=self.arn)
        except Exception as exc:  # botocore's errors: no access, not found, unreachable
            raise CredentialsError(f"{self.name} {self.arn}: {type(exc).__name__}") from None
        return parse_document(answer.get("SecretString") or "", f"{self.name} {self.arn}")


class AzureKeyVaultSource:
    name = "Azure Key Vault"

    def __init__(self, vault_url: str, secret: str, connection_verify=None):
        self.vault_url, self.secret = vault_url, secret
        self.connection_verify = connection_verify

    def check(self) -> None:
        _sdk("azure.keyvault.secrets", self.name)
        _sdk("azure.identity", self.name)

    def load(self) -> dict:
        secrets = _sdk("azure.keyvault.secrets", self.name)
        identity = _sdk("azure.identity", self.name)
        where = f"{self.name} {self.vault_url} secret {self.secret}"
        kwargs = {}
        if self.connection_verify is not None:
            kwargs["connection_verify"] = self.connection_verify
        try:
            # Managed identity in Azure; AZURE_CLIENT_ID/_SECRET/_TENANT_ID elsewhere.
            credential = identity.DefaultAzureCredential(**kwargs)
            client = secrets.SecretClient(self.vault_url, credential, **kwargs)
            value = client.get_secret(self.secret).value
        except Exception as exc:
            raise CredentialsError(f"{where}: {type(exc).__name__}") from None
        return parse_document(value or "", where)


class GcpSecretManagerSource:
    name = "GCP Secret Manager"

    def __init__(self, secret_name: str):
        # projects/<p>/secrets/<s>[/versions/<v>]; the latest version unless one is named.
        self.secret_name = secret_name
        if "/versions/" not in secret_name:
            self.secret_name = secret_name.rstrip("/") + "/versions/latest"

    def check(self) -> None:
        _sdk("google.cloud.secretmanager", self.name)

    def load(self) -> dict:
        sm = _sdk("google.cloud.secretmanager", self.name)
        where = f"{self.name} {self.secret_name}"
        try:
            # REST, not gRPC: one HTTPS request, through a proxy like any other.
            client = sm.SecretManagerServiceClient(transport="rest")
            answer = client.access_secret_version(name=self.secret_name)
        except Exception as exc:
            raise CredentialsError(f"{where}: {type(exc).__name__}") from None
        return parse_document(answer.payload.data, where)


def _same_endpoint(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def _plain_netloc(url) -> bool:
    """An http(s) URL whose authority is only a host and port: no userinfo, backslash,
    percent sign (a zone id, or an encoding) or space/control character, which clients read
    differently (the vendor's hosts are held to the same, ``ambient_host_problem``)."""
    netloc = url.netloc
    return (
        url.scheme in ("http", "https")
        and not {"@", "\\", "%"} & set(netloc)
        and netloc.isprintable()
        and " " not in netloc
    )


def endpoint_problem(kind, api_base: str, pin, networks=()) -> str | None:
    """Why a provider's local credentials must not go to ``api_base``, the endpoint the
    control plane names (None: they may). ``pin``: the endpoint (or endpoints) the VPC's
    own sources name for them, if any; ``networks``: BONITO_PROVIDER_ALLOWED_NETWORKS."""
    pins = (pin,) if isinstance(pin, str) else tuple(pin or ())
    pins = tuple(p for p in pins if p)
    if pins:
        if any(_same_endpoint(api_base or "", p) for p in pins):
            return None
        return "is not the endpoint its credentials are pinned to"
    if not api_base or (kind.ambient_hosts and ambient_host_problem(kind, api_base) is None):
        return None  # the vendor's default, or one of its API hosts
    if kind.ambient_hosts:
        # A vendor's key (OpenAI's, Anthropic's, AWS's…) goes to the vendor, or to the one
        # endpoint pinned for it (a proxy of the VPC's): not to any address of the allowed
        # networks, which operators set wide (10.0.0.0/8) for a self-hosted server.
        return "is not one of the vendor's API hosts"
    try:
        url = urlsplit(api_base.strip())
        host = normalize_host(url.hostname or "") if _plain_netloc(url) else ""
    except ValueError:
        host = ""
    ip = ip_literal(host)
    if ip is not None and any(ip in net for net in networks if net.version == ip.version):
        return None  # an address of a private network the operator allowed
    return (
        "is neither one of the vendor's API hosts nor an address of "
        "BONITO_PROVIDER_ALLOWED_NETWORKS"
    )


def setting_problem(kind, region: str, settings) -> str | None:
    """Why a deployment's region or settings must not carry local credentials (None: they
    may): a region (which goes into the host a call is signed for or sends its token to,
    bedrock-runtime.<region>.amazonaws.com, <location>-aiplatform.googleapis.com) that is
    not a region's name. The control plane refuses one when it is saved; the agent does not
    take its word for it, nor rely on LiteLLM's own check."""
    settings = settings if isinstance(settings, dict) else {}
    for f in kind.fields:
        if not f.region:
            continue
        value = region or settings.get(f.name)
        if value and provider_kinds.region_problem(value):
            return (
                f"its {f.label.lower()} ({str(value)[:40]!r}, set on the control plane) "
                "is not a region's name"
            )
    return None


class Credentials:
    """Every configured source; ``for_deployment`` is what a deployment's call carries."""

    def __init__(self, sources, env: dict, networks=()):
        self.sources = list(sources)
        self.env = env
        self.networks = parse_networks(str(n) for n in networks)
        self.by_provider: dict = {}
        self.errors: list[str] = []
        self._last: dict = {}  # source name -> the document it gave last
        # provider -> why its credentials are withheld (the heartbeat's warnings)
        self.withheld: dict[str, str] = {}
        self._said: set = set()  # what was logged already

    @classmethod
    def from_settings(cls, s) -> "Credentials":
        sources = []
        if s.credentials_file:
            sources.append(FileSource(s.credentials_file))
        if s.aws_secret_arn:
            sources.append(AwsSecretsManagerSource(s.aws_secret_arn))
        if s.azure_vault_url:
            sources.append(AzureKeyVaultSource(s.azure_vault_url, s.azure_secret_name))
        if s.gcp_secret_name:
            sources.append(GcpSecretManagerSource(s.gcp_secret_name))
        return cls(sources, s.env, s.provider_networks)

    def files_changed(self) -> bool:
        """Whether a credentials file changed since it was read (a stat each: cheap)."""
        return any(isinstance(s, FileSource) and s.changed() for s in self.sources)

    def check(self) -> None:
        """At start: every configured source's SDK is importable and a credentials file can
        be read (else CredentialsError). A secret manager is read later: it may be away."""
        for source in self.sources:
            source.check()

    def load(self) -> bool:
        """Read every source again. A source that fails keeps what it gave last time (an
        error is logged and kept for the heartbeat's warnings). True if anything changed."""
        merged: dict = {}
        errors = []
        for source in self.sources:
            try:
                doc = source.load()
            except CredentialsError as exc:
                errors.append(str(exc))
                log.error("credentials: %s", exc)
                doc = {p: dict(f) for p, f in self._last.get(source.name, {}).items()}
            self._last[source.name] = doc
            for provider, fields in doc.items():
                merged.setdefault(provider, {}).update(fields)
        changed = merged != self.by_provider
        self.by_provider, self.errors = merged, errors
        return changed

    def _pins(self, provider: str, from_env: bool) -> tuple:
        """The endpoints ``provider``'s credentials are pinned to: its variable's, else its
        document's, and, where a credential came from a variable, the documents' of every
        provider whose name makes the same variable names ("vpc-llm", "vpc_llm" and "VPC.LLM"
        all read BONITO_PROVIDER_VPC_LLM_…): a control plane that named another spelling of
        the name got the variable's key without the document's pin."""
        own = self.env.get(env_name(provider, PIN))
        if own:
            return (own,)
        pins = [self.by_provider.get(provider, {}).get(PIN)]
        if from_env:
            prefix = env_name(provider, "")
            pins += [
                fields.get(PIN)
                for name, fields in self.by_provider.items()
                if name != provider and env_name(name, "") == prefix
            ]
        return tuple(p for p in pins if p)

    def for_deployment(
        self, provider: str, kind_name: str, api_base: str = "", region: str = "", settings=None
    ) -> dict:
        """The credentials a call to ``provider`` (of ``kind_name``) at ``api_base`` (with
        this ``region`` and ``settings``) carries: none where they must not go there."""
        return self.verdict(provider, kind_name, api_base, region, settings)[0]

    def verdict(
        self, provider: str, kind_name: str, api_base: str = "", region: str = "", settings=None
    ) -> tuple[dict, str]:
        """(the credentials a call to ``provider`` carries, "") or, where the VPC holds
        credentials for it that must not go there (``endpoint_problem``,
        ``setting_problem``), ({}, why): said once in the log and kept in ``withheld`` for
        the heartbeat; the agent then refuses the call rather than make it without them."""
        creds = dict(self.by_provider.get(provider, {}))
        kind = provider_kinds.get(kind_name)
        creds.pop(PIN, None)
        if kind is None:
            return {}, ""
        from_env = False
        for f in kind.fields_in(provider_kinds.CREDENTIALS):
            value = self.env.get(env_name(provider, f.name))
            if value:
                creds[f.name] = value
                from_env = True
        if not creds:
            return {}, ""
        problem = endpoint_problem(kind, api_base, self._pins(provider, from_env), self.networks)
        if problem is not None:
            try:
                where = urlsplit(api_base).hostname or api_base
            except ValueError:  # not a URL ("http://[::1"): said as it is, not a crash
                where = api_base
            said = (
                f"provider {provider}'s credentials are withheld: its endpoint "
                f"({str(where)[:100]}, set on the control plane) {problem}; to send them "
                f'there, add "{PIN}": "<its URL>" to its credentials document or set '
                f"{env_name(provider, PIN)}"
            )
        elif (problem := setting_problem(kind, region, settings)) is not None:
            said = f"provider {provider}'s credentials are withheld: {problem}"
        else:
            return creds, ""
        self.withheld[provider] = said
        if said not in self._said:
            self._said.add(said)
            log.error("credentials: %s", said)
        return {}, said
