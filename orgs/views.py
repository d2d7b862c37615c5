from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import urlsafe_base64_decode
from django.views.decorators.http import require_http_methods, require_POST

from core import show_once
from core.form_input import form_error, form_message
from orgs.audit import Actor

from . import services, sso, throttle
from .backends import BACKEND
from .forms import (
    AcceptInvitationForm,
    InviteForm,
    MemberForm,
    OrgSettingsForm,
    PasswordResetForm,
    RoleForm,
    TeamForm,
)
from .models import Invitation, Membership, Organization, PersonalAccessToken, Team
from .permissions import org_view


def _errors(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def home(request):
    if not request.user.is_authenticated:
        return redirect("login")
    slug = request.session.get("current_org")
    membership = Membership.objects.filter(user=request.user).select_related("org")
    chosen = membership.filter(org__slug=slug).first() if slug else None
    chosen = chosen or membership.first()
    if chosen is None:
        return render(request, "orgs/no_org.html")
    return redirect("overview", org_slug=chosen.org.slug)


@login_required
def org_switcher(request):
    return render(request, "orgs/switcher.html")


@org_view(write_role="admin")
def team(request):
    org = request.org
    refused = None
    if request.method == "POST":
        form = InviteForm(request.POST, org=org)
        created = False
        # One transaction: the send is counted (the limits hold their rows) before another.
        with transaction.atomic():
            if form.is_valid():
                refused = throttle.invitation_send_refusal(request, org)
            if refused:
                form.add_error(None, refused[1])
            elif form.is_valid():
                try:
                    services.invitation_create(
                        actor=Actor.from_request(request),
                        org=org,
                        email=form.cleaned_data["email"],
                        role=form.cleaned_data["role"],
                        team=form.cleaned_data["team"],
                        base_url=request.build_absolute_uri("/"),
                    )
                except ValidationError as exc:
                    form.add_error("email", _errors(exc))
                else:
                    created = True
        if created:
            messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
            return redirect("team", org_slug=org.slug)
    else:
        form = InviteForm(org=org)
    # A POST that reaches the page was refused: 429 past a limit, else 400 (form kept).
    status = 429 if refused else 400 if request.method == "POST" else 200
    response = _team_page(request, invite_form=form, status=status)
    if refused:
        response["Retry-After"] = str(refused[0])
    return response


def _team_page(request, *, invite_form=None, team_form=None, typed=None, status=200):
    """The Team page. A refused form comes back with what was typed: ``team_form`` (a new
    team's, bound), ``typed`` (a team's inline rename: its id, name and description)."""
    org = request.org
    return render(
        request,
        "orgs/team.html",
        {
            "section": "team",
            "members": Membership.objects.for_org(org).select_related("user", "team"),
            "invitations": Invitation.objects.for_org(org).pending().select_related("team"),
            "teams": Team.objects.for_org(org),
            "invite_form": invite_form or InviteForm(org=org),
            "team_form": team_form or TeamForm(),
            "typed": typed,
            "roles": RoleForm.base_fields["role"].choices,
        },
        status=status,
    )


@require_POST
@org_view(role="admin")
def member_role(request, membership_id):
    """A member's role and team (one row of the Team page)."""
    membership = get_object_or_404(
        Membership.objects.for_org(request.org).select_related("user", "team"), pk=membership_id
    )
    form = MemberForm(request.POST, org=request.org)
    if form.is_valid():
        team = form.cleaned_data["team"] if "team" in request.POST else membership.team
        try:
            services.membership_set_role(
                actor=Actor.from_request(request),
                membership=membership,
                role=form.cleaned_data["role"],
                team=team,
            )
            where = f" in team {team.name}" if team else ", in no team"
            messages.success(
                request, f"{membership.user.email} is now {form.cleaned_data['role']}{where}."
            )
        except ValidationError as exc:
            messages.error(request, _errors(exc))
    elif form.has_error("team"):
        messages.error(request, "Choose one of this organization's teams, or none.")
    else:
        messages.error(request, "Choose admin, member or viewer.")
    return redirect("team", org_slug=request.org.slug)


@require_POST
@org_view(role="admin")
def member_remove(request, membership_id):
    membership = get_object_or_404(Membership.objects.for_org(request.org), pk=membership_id)
    try:
        services.membership_remove(actor=Actor.from_request(request), membership=membership)
        messages.success(request, f"{membership.user.email} was removed.")
    except ValidationError as exc:
        messages.error(request, _errors(exc))
    return redirect("team", org_slug=request.org.slug)


@require_http_methods(["GET", "POST"])
@org_view(role="admin")
def team_create(request):
    if request.method == "GET":  # a reload after a refused form: the page that holds it
        return redirect("team", org_slug=request.org.slug)
    form = TeamForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError(form.errors.as_data())
        services.team_create(
            actor=Actor.from_request(request), org=request.org, **form.cleaned_data
        )
    except ValidationError as exc:
        messages.error(request, form_message(form, exc))
        return _team_page(request, team_form=form, status=400)  # the form keeps what was typed
    messages.success(request, f"Team {form.cleaned_data['name']} created.")
    return redirect("team", org_slug=request.org.slug)


@require_http_methods(["GET", "POST"])
@org_view(role="admin")
def team_edit(request, team_id):
    obj = get_object_or_404(Team.objects.for_org(request.org), pk=team_id)
    if request.method == "GET":  # a reload after a refused edit: the page that holds it
        return redirect("team", org_slug=request.org.slug)
    form = TeamForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError(form.errors.as_data())
        services.team_update(actor=Actor.from_request(request), team=obj, **form.cleaned_data)
    except ValidationError as exc:
        messages.error(request, form_message(form, exc))
        # The team's inline form keeps what was typed (a redirect showed its stored name).
        typed = {
            "id": obj.pk,
            "name": request.POST.get("name", ""),
            "description": request.POST.get("description", ""),
        }
        return _team_page(request, typed=typed, status=400)
    messages.success(request, f"Team {obj.name} saved.")
    return redirect("team", org_slug=request.org.slug)


@require_POST
@org_view(role="admin")
def team_delete(request, team_id):
    obj = get_object_or_404(Team.objects.for_org(request.org), pk=team_id)
    try:
        services.team_delete(actor=Actor.from_request(request), team=obj)
    except ValidationError as exc:
        messages.error(request, _errors(exc))
    else:
        messages.success(request, f"Team {obj.name} deleted.")
    return redirect("team", org_slug=request.org.slug)


@require_POST
@org_view(role="admin")
def invitation_revoke(request, invitation_id):
    invitation = get_object_or_404(Invitation.objects.for_org(request.org), pk=invitation_id)
    services.invitation_revoke(actor=Actor.from_request(request), invitation=invitation)
    messages.success(request, f"Invitation for {invitation.email} revoked.")
    return redirect("team", org_slug=request.org.slug)


@require_POST
@org_view(role="admin")
def invitation_resend(request, invitation_id):
    invitation = get_object_or_404(Invitation.objects.for_org(request.org), pk=invitation_id)
    try:
        with transaction.atomic():  # counted before another send (the limits hold rows)
            refused = throttle.invitation_resend_refusal(request, invitation)
            if not refused:
                services.invitation_resend(
                    actor=Actor.from_request(request),
                    invitation=invitation,
                    base_url=request.build_absolute_uri("/"),
                )
    except ValidationError as exc:
        messages.error(request, _errors(exc))
    else:
        if refused:
            messages.error(request, refused[1])
        else:
            messages.success(
                request,
                f"Invitation sent again to {invitation.email}; the earlier link no longer works.",
            )
    return redirect("team", org_slug=request.org.slug)


@org_view(write_role="admin")
def org_settings(request):
    org = request.org
    if request.method == "POST":
        # The form checks a copy: a ModelForm sets the name on its instance while it
        # validates, and org_update must see the org as stored to audit the change.
        form = OrgSettingsForm(request.POST, instance=Organization.objects.get(pk=org.pk))
        if form.is_valid():
            services.org_update(
                actor=Actor.from_request(request), org=org, name=form.cleaned_data["name"]
            )
            messages.success(request, "Settings saved.")
            return redirect("settings", org_slug=org.slug)
    else:
        form = OrgSettingsForm(instance=org)
    return _settings_page(request, form, status=400 if form.is_bound else 200)  # bound: refused


def _settings_page(request, form, new_token: str | None = None, status=200, token_name=""):
    return render(
        request,
        "orgs/settings.html",
        {
            "section": "settings",
            "form": form,
            "new_token": new_token,
            "token_name": token_name,  # a refused new token's name, as typed
            "tokens": PersonalAccessToken.objects.filter(
                org=request.org, user=request.user
            ).active(),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@org_view()
def token_create(request):
    if request.method == "GET":  # a reload after a refused form: the page that holds it
        return redirect("settings", org_slug=request.org.slug)
    name = request.POST.get("name", "")
    try:
        token, raw = services.pat_create(
            actor=Actor.from_request(request), user=request.user, org=request.org, name=name
        )
    except ValidationError as exc:
        messages.error(request, form_error(exc, {"name": "Name"}))
        # The page again with the name as typed (a redirect lost it), as other forms do.
        form = OrgSettingsForm(instance=request.org)
        return _settings_page(request, form, status=400, token_name=name)
    show_once.keep(request, "token", token.id, raw)
    return redirect("token_created", org_slug=request.org.slug, token_id=token.id)


@org_view()
def token_created(request, token_id):
    """The new token, shown on the first GET after creating it and never again (a reload
    says so and creates nothing)."""
    token = get_object_or_404(
        PersonalAccessToken.objects.filter(org=request.org, user=request.user), pk=token_id
    )
    raw = show_once.take(request, "token", token.id)
    if raw is None:
        messages.info(request, f"The token {token.name} was shown once, when it was created.")
    response = _settings_page(request, OrgSettingsForm(instance=request.org), new_token=raw)
    response["Cache-Control"] = "no-store"  # the token is on this page, once
    return response


@require_POST
@org_view()
def digest_toggle(request):
    """Each user opts in or out of the weekly digest email for themselves."""
    request.user.weekly_digest = request.POST.get("weekly_digest") == "on"
    request.user.save(update_fields=["weekly_digest"])
    messages.success(request, "Weekly digest " + ("on." if request.user.weekly_digest else "off."))
    return redirect("settings", org_slug=request.org.slug)


@require_POST
@org_view()
def token_revoke(request, token_id):
    token = get_object_or_404(
        PersonalAccessToken.objects.filter(org=request.org, user=request.user), pk=token_id
    )
    services.pat_revoke(actor=Actor.from_request(request), token=token)
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("settings", org_slug=request.org.slug)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset form, limited per client address and per email typed. Unknown emails
    count the same as known ones, so neither the answer nor the limit tells who has an
    account. The worker looks the email up and sends the link (PasswordResetForm)."""

    form_class = PasswordResetForm

    def post(self, request, *args, **kwargs):
        email = request.POST.get("email", "").strip().lower()
        refused = throttle.refusal(
            request,
            (
                "password-reset:address",
                throttle.client_address(request),
                settings.PASSWORD_RESET_ADDRESS_PER_HOUR,
            ),
            ("password-reset:email", email, settings.PASSWORD_RESET_EMAIL_PER_HOUR),
        )
        return refused or super().post(request, *args, **kwargs)


def _reset_account(uidb64: str) -> str:
    """The account a reset link names, as the limit counts it. One user id has endless
    base64 spellings (`NA`, `MDQ`, `MDA0`, `KzQ`, `IDQ` all decode to user 4, as Django
    reads them), so the limit counts the decoded id; a uid that decodes to no id is counted
    as it is written (it names no account, and the per-address limit holds it)."""
    try:
        return f"pk:{int(urlsafe_base64_decode(uidb64).decode())}"
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError):
        return f"raw:{uidb64}"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """The link from the reset email, limited per client address and per account (the uid in
    the link) against guessing tokens."""

    def dispatch(self, request, *args, **kwargs):
        refused = throttle.refusal(
            request,
            (
                "password-reset-confirm:address",
                throttle.client_address(request),
                settings.PASSWORD_RESET_ADDRESS_PER_HOUR,
            ),
            (
                "password-reset-confirm:account",
                _reset_account(kwargs.get("uidb64", "")),
                settings.PASSWORD_RESET_ADDRESS_PER_HOUR,
            ),
        )
        return refused or super().dispatch(request, *args, **kwargs)


_ACCEPT_NAME_MESSAGE = "Your name is at most 150 characters."


def invitation_accept(request, token):
    # Per client address against guessing tokens; per token so that one link cannot be hammered.
    refused = throttle.refusal(
        request,
        (
            "invitation:address",
            throttle.client_address(request),
            settings.INVITATION_ADDRESS_PER_HOUR,
        ),
        ("invitation:token", token, settings.INVITATION_TOKEN_PER_HOUR),
    )
    if refused:
        return refused
    try:
        invitation = services.invitation_lookup(token)
    except services.InvitationError as exc:
        return render(request, "orgs/invitation_error.html", {"message": str(exc)}, status=410)
    form = AcceptInvitationForm(request.POST or None)
    needs_account = not request.user.is_authenticated
    # An org that signs this email in through SSO only: the account gets no password, and
    # the first sign-in is the IdP's (a password session would go around it).
    sso_only = sso.sso_only_for(invitation.org, invitation.email) if needs_account else None
    if sso_only is not None:
        form.fields["password"].required = False
    if request.method == "POST":
        actor = Actor.from_request(request)
        try:
            if sso_only is not None:
                form.is_valid()
                if form.has_error("name"):
                    raise ValidationError(_ACCEPT_NAME_MESSAGE)
                name = form.cleaned_data.get("name", "")
                membership = services.invitation_accept(actor=actor, raw_token=token, name=name)
                messages.success(
                    request,
                    f"Welcome to {membership.org.name}. Sign in through its single sign-on.",
                )
                return redirect(f"/sso/{membership.org.slug}/login/")
            if needs_account:
                if not form.is_valid():
                    raise ValidationError(
                        [
                            message
                            for field, message in (
                                ("name", _ACCEPT_NAME_MESSAGE),
                                ("password", "Choose a password of at least 8 characters."),
                            )
                            if form.has_error(field)
                        ]
                    )
                validate_password(form.cleaned_data["password"])
                membership = services.invitation_accept(
                    actor=actor,
                    raw_token=token,
                    password=form.cleaned_data["password"],
                    name=form.cleaned_data["name"],
                )
                login(request, membership.user, backend=BACKEND)
            else:
                membership = services.invitation_accept(
                    actor=actor, raw_token=token, user=request.user
                )
        except services.InvitationError as exc:
            return render(request, "orgs/invitation_error.html", {"message": str(exc)}, status=410)
        except ValidationError as exc:
            form.add_error(None, _errors(exc))
        else:
            messages.success(request, f"Welcome to {membership.org.name}.")
            return redirect("overview", org_slug=membership.org.slug)
    return render(
        request,
        "orgs/invitation_accept.html",
        {
            "invitation": invitation,
            "form": form,
            "needs_account": needs_account and sso_only is None,
            "sso_only": sso_only is not None,
        },
    )
