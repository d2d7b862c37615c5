"""The billing dashboard's forms: how the Budgets page reads its POST body. The form reads
the text; budget_save, the service every way in calls, checks the values (money exactly)."""

from django import forms

from core.form_input import OrgForm, OrgRowField, WholeNumberListField
from gateway.models import ApiKey
from orgs.models import Team

from .models import Budget


class BudgetForm(OrgForm):
    scope = forms.ChoiceField(
        label="For",
        choices=Budget.Scope.choices,
        required=False,
        error_messages={"invalid_choice": "choose the whole org, a team or a key."},
    )
    team = OrgRowField(Team, label="Team")
    key = OrgRowField(ApiKey, label="Key")
    period = forms.ChoiceField(
        label="Period",
        choices=Budget.Period.choices,
        required=False,
        error_messages={"invalid_choice": "choose monthly or daily."},
    )
    # Read exactly (10.1 is 10.10), never negative, by budget_save.
    amount_usd = forms.CharField(label="Amount", required=False)
    thresholds = WholeNumberListField(label="Alert thresholds", minimum=1, maximum=1000)
    webhook_url = forms.CharField(label="Webhook URL", required=False)
    hard = forms.BooleanField(required=False)

    def clean_scope(self):
        return self.cleaned_data["scope"] or Budget.Scope.ORG

    def clean_period(self):
        return self.cleaned_data["period"] or Budget.Period.MONTHLY
