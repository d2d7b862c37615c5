"""SAML SP endpoints per org (/sso/<slug>/...), SSO discovery by email domain, and the
org admins' SSO settings page."""

from datetime import timedelta
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from orgs.audit import Actor

from . import sso
from .backends import BACKEND
from .forms import SSOConfigForm, SSODiscoverForm
from .models import Organization, SSOConfig
from .permissions import org_view


def _config(slug: str) -> SSOConfig:
    config = (
        SSOConfig.objects.filter(org__slug=slug, enabled=True)
        .select_related("org", "break_glass_user")
        .first()
    )
    if config is None:
        raise Http404("This organization has no single sign-on configured.")
    return config


def _refused(
    request, org: Organization, reason: str, email="", status=403, logout=False, shown=None
):
    sso.audit_refusal(request, org, reason, email)
    return render(
        request,
        "orgs/sso_error.html",
        {
            "org": org,
            "reason": reason if shown is None else shown,
            "login_url": f"/sso/{org.slug}/login/",
            "logout": logout,
        },
        status=status,
    )


@require_GET
def metadata(request, org_slug):
    config = _config(org_slug)
    return HttpResponse(
        sso.sp_metadata(config, request), content_type="application/samlmetadata+xml"
    )


@require_GET
def sso_login(request, org_slug):
    config = _config(org_slug)
    if not sso.message_allowed(request, "login"):  # each start stores a request row
        return _too_many(request, config.org)
    url, nonce = sso.begin_login(request, config, request.GET.get("next", ""))
    response = redirect(url)
    if nonce:
        response.set_cookie(
            sso.BROWSER_COOKIE,
            nonce,
            max_age=settings.SSO_REQUEST_TTL_S,
            path=f"/sso/{org_slug}/",
            secure=True,
            httponly=True,
            samesite="None",
        )
    return response


@csrf_exempt  # the IdP posts here cross-site; the signed response and InResponseTo stand in
@require_POST
def acs(request, org_slug):
    config = _config(org_slug)
    if not sso.message_allowed(request, "acs"):
        return _too_many(request, config.org)
    try:
        user, membership, relay, info = sso.consume(request, config)
    except sso.SSORefused as exc:
        shown = exc.reason if exc.public else sso.REFUSED_PAGE_REASON
        return _refused(request, config.org, exc.reason, exc.email, shown=shown)
    login(request, user, backend=BACKEND)  # rotates the session key
    # A timedelta is a fixed end (now + session_hours); seconds would count from the last
    # write, and every dashboard page writes the session: it would never end.
    request.session.set_expiry(timedelta(hours=config.session_hours))
    sso.session_opened(request, config, user, info)
    request.session["current_org"] = config.org.slug
    response = redirect(relay)
    response.delete_cookie(sso.BROWSER_COOKIE, path=f"/sso/{org_slug}/", samesite="None")
    return response


def _too_many(request, org: Organization):
    return render(
        request,
        "orgs/sso_error.html",
        {
            "org": org,
            "reason": "Too many sign-in attempts from your address. Wait a minute and try again.",
            "login_url": f"/sso/{org.slug}/login/",
        },
        status=429,
    )


@csrf_exempt  # the IdP's messages come cross-site; the Log out button is CSRF-checked below
@require_http_methods(["GET", "POST"])
def sls(request, org_slug):
    """Single logout: a LogoutRequest or LogoutResponse from the IdP (HTTP-Redirect or
    HTTP-POST binding), or the user's Log out button (POST, CSRF-checked), sent on to the
    IdP when it has an SLO URL."""
    config = _config(org_slug)
    if sso.logout_message_kind(request):
        if not sso.message_allowed(request, "sls"):
            return _too_many(request, config.org)
        try:
            url = sso.logout_message_process(request, config)
        except sso.SSORefused as exc:
            return _refused(request, config.org, exc.reason, exc.email, status=400, logout=True)
        return redirect(url)
    if request.method != "POST":  # a bare GET must not log anyone out (cross-site links)
        return redirect("home")
    return _logout_button(request, config)


@csrf_protect
def _logout_button(request, config: SSOConfig):
    url = sso.logout_begin(request, config)
    return redirect(url or "login")


@require_http_methods(["GET", "POST"])
def discover(request):
    """'Continue with SSO': the email's domain picks the org's IdP."""
    form = SSODiscoverForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        config = sso.config_for_email(form.cleaned_data["email"])
        if config is not None:
            nxt = sso.safe_relay_state(form.cleaned_data.get("next"))
            url = f"/sso/{config.org.slug}/login/"
            return redirect(f"{url}?{urlencode({'next': nxt})}" if nxt else url)
        form.add_error("email", "No organization signs in with single sign-on for that domain.")
    return render(request, "orgs/sso_discover.html", {"form": form})


# ------------------------------------------------------------------------------ settings page
class SSOSettingsForm(SSOConfigForm):
    """The settings page's form: the shared SSO form plus the signing choices (a select,
    not a checkbox, so a post that leaves one out keeps the safe default)."""

    require_signed_logout = forms.TypedChoiceField(
        required=False,
        choices=[("yes", "Required (safer)"), ("no", "Not required")],
        coerce=lambda value: value != "no",
        empty_value=True,
    )
    signature_scope = forms.ChoiceField(
        required=False, choices=SSOConfig.SignatureScope.choices
    )  # left out of a post: unchanged


def _initial(config: SSOConfig | None) -> dict:
    if config is None:
        return {"preset": "okta", "session_hours": 12, "enabled": True}
    return {
        **{f: getattr(config, f) for f in sso.CONFIG_FIELDS},
        "require_signed_logout": "yes" if config.require_signed_logout else "no",
        "email_domains": ", ".join(config.email_domains),
        "group_roles": "\n".join(f"{g} = {r}" for g, r in config.group_roles.items()),
        "break_glass_email": config.break_glass_user.email if config.break_glass_user else "",
    }


@org_view(role="admin", write_role="admin")
def sso_settings(request):
    org = request.org
    config = SSOConfig.objects.filter(org=org).select_related("break_glass_user").first()
    if request.method == "POST" and request.POST.get("action") == "rotate_sp_key":
        if config is not None:
            sso.sp_key_rotate(actor=Actor.from_request(request), config=config)
            messages.success(
                request,
                "New SP key pair in use. Give your IdP the new certificate (or let it re-read "
                "the metadata) before the old one stops being published.",
            )
        return redirect("sso_settings", org_slug=org.slug)
    form = SSOSettingsForm(request.POST or None, request.FILES or None, initial=_initial(config))
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        if not data.get("signature_scope"):
            data.pop("signature_scope", None)
        xml = data.pop("metadata_xml", "").strip()
        upload = data.pop("metadata_file", None)
        if upload is not None:
            xml = upload.read(sso.METADATA_MAX_BYTES + 1).decode("utf-8", "replace")
        try:
            if xml:
                if len(xml) > sso.METADATA_MAX_BYTES:
                    raise ValidationError("That metadata file is too large.")
                data.update(sso.metadata_fields(xml))
            break_glass = data.pop("break_glass_email") or ""
            sso.sso_config_save(
                actor=Actor.from_request(request),
                org=org,
                break_glass_email=break_glass,
                **data,
            )
        except ValidationError as exc:
            form.add_error(None, " ".join(exc.messages))
        else:
            messages.success(request, "Single sign-on settings saved.")
            return redirect("sso_settings", org_slug=org.slug)
    return render(
        request,
        "orgs/sso_settings.html",
        {
            "section": "settings",
            "form": form,
            "config": config,
            "sp": sso.sp_urls(request, org),
            "presets": sso.PRESETS,
            "domains": sso.domains_status(config),
            "trust_claims": settings.SSO_DOMAIN_VERIFICATION == "trust",
            "sp_cert": sso.sp_certificate_info(sso.sp_keys(config)[1]) if config else {},
            "sp_previous": sso.sp_certificate_info(sso.sp_previous_keys(config)[1])
            if config
            else {},
        },
        status=400 if form.is_bound else 200,  # a bound form here was refused
    )
