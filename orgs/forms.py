from django import forms
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from core.text import validate_name

from .models import Organization, Role, SSOConfig, Team


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False)

    def __init__(self, *args, org, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.for_org(org)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class MemberForm(forms.Form):
    """A member's role and team (the Team page's row). A body without ``team`` keeps the
    member's team; an empty one takes them out of any team."""

    role = forms.ChoiceField(choices=Role.choices)
    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False)

    def __init__(self, *args, org, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.for_org(org)


class TeamForm(forms.Form):
    name = forms.CharField(max_length=120, validators=[validate_name])
    description = forms.CharField(max_length=500, required=False)


class OrgSettingsForm(forms.ModelForm):
    class Meta:
        model = Organization
        fields = ["name"]

    def clean_name(self):
        validate_name(self.cleaned_data["name"])
        return self.cleaned_data["name"]


class AcceptInvitationForm(forms.Form):
    name = forms.CharField(max_length=150, required=False)
    password = forms.CharField(widget=forms.PasswordInput, min_length=8)


class LoginForm(AuthenticationForm):
    """Password sign-in. Members of an org that requires SSO are sent to its IdP, but only once
    their password is right: until then every failure reads the same, for members, outsiders
    and unknown emails alike, so the form does not tell who belongs to which org. The email
    is matched whatever its case (PasswordBackend); only the password is case-sensitive."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Please enter a correct email and password. "
        "Note that the password is case-sensitive.",
    }

    def clean(self):
        try:
            return super().clean()
        except ValidationError:
            config = getattr(self.request, "password_blocked_by", None)
            if config is None:
                raise
            self.sso_org = config.org
            raise ValidationError(
                f"{config.org.name} signs in through single sign-on: use “Continue with SSO”.",
                code="sso_required",
            ) from None


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Django's reset form, but the worker looks the email up and sends the link: the answer
    takes as long for an email with an account as for one without (sending mail takes a
    while, and only known emails get one)."""

    def save(self, *, request, use_https=False, **_kwargs):
        from core.tasks import enqueue

        from .tasks import password_reset_send

        enqueue(password_reset_send, self.cleaned_data["email"], request.get_host(), use_https)


class SSODiscoverForm(forms.Form):
    email = forms.EmailField()
    next = forms.CharField(required=False)


class SSOConfigForm(forms.Form):
    preset = forms.ChoiceField(choices=SSOConfig.Preset.choices)
    metadata_xml = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Paste the IdP's metadata XML, or fill in the three fields below.",
    )
    metadata_file = forms.FileField(required=False)
    idp_entity_id = forms.CharField(required=False, max_length=500)
    idp_sso_url = forms.URLField(required=False, max_length=1000)
    idp_slo_url = forms.URLField(required=False, max_length=1000)
    idp_x509_cert = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    email_domains = forms.CharField(help_text="Comma- or space-separated, e.g. acme.com")
    email_attribute = forms.CharField(required=False, max_length=300)
    name_attribute = forms.CharField(required=False, max_length=300)
    groups_attribute = forms.CharField(required=False, max_length=300)
    group_roles = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: IdP group = admin | member | viewer",
    )
    default_role = forms.ChoiceField(
        required=False, choices=[("", "No access")] + list(Role.choices)
    )
    sso_required = forms.BooleanField(required=False)
    break_glass_email = forms.EmailField(required=False)
    allow_idp_initiated = forms.BooleanField(required=False)
    session_hours = forms.IntegerField(min_value=1, max_value=720, initial=12)
    enabled = forms.BooleanField(required=False, initial=True)

    def clean_group_roles(self):
        roles = {}
        for n, line in enumerate(self.cleaned_data["group_roles"].splitlines(), 1):
            if not line.strip():
                continue
            group, sep, role = line.rpartition("=")
            if not sep or not group.strip():
                raise ValidationError(f"Line {n}: write it as “group = role”.")
            roles[group.strip()] = role.strip().lower()
        return roles
