from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and usage"

    def ready(self):
        # Billing sits above the gateway: it plugs its part into the gateway's two seams
        # here, where the dependency is visible (docs/architecture.md).
        from gateway import runtime, selectors, snapshot_builder

        from . import budgets, spend, usage_writer

        snapshot_builder.add_org_facts(budgets.org_facts)
        selectors.use_key_spend(spend.key_spend_this_month)
        runtime.use_usage_writer(
            usage_writer.write_usage,
            is_refusal=usage_writer.is_refusal,
            feedback=usage_writer.record_feedback,
        )
