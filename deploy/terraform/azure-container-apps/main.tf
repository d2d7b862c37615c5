# The Bonito VPC agent on Azure Container Apps: an internal-only environment in your subnet,
# the org token referenced from Key Vault through a user-assigned identity, no public ingress.

data "azurerm_resource_group" "this" {
  name = var.resource_group
}

locals {
  location = data.azurerm_resource_group.this.location
  environment = merge(
    {
      BONITO_CONTROL_PLANE   = var.control_plane_url
      BONITO_AGENT_PORT      = "8000"
      BONITO_STATE_DIR       = "/var/lib/bonito-agent"
      AZURE_KEY_VAULT_URL    = var.key_vault_url
      AZURE_KEY_VAULT_SECRET = var.credentials_secret_name
      AZURE_CLIENT_ID        = azurerm_user_assigned_identity.this.client_id
    },
    var.extra_environment,
  )
  token_secret_id = "${trimsuffix(var.key_vault_url, "/")}/secrets/${var.org_token_secret_name}"
}

resource "azurerm_user_assigned_identity" "this" {
  name                = "${var.name}-identity"
  resource_group_name = var.resource_group
  location            = local.location
  tags                = var.tags
}

# Read secrets (the token and the provider credentials) in this vault, nothing else.
resource "azurerm_role_assignment" "secrets_user" {
  scope                = var.key_vault_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.this.principal_id
}

resource "azurerm_key_vault_secret" "token" {
  #checkov:skip=CKV_AZURE_41:The bt- token does not expire by date; it is rotated from the Bonito dashboard.
  count        = var.org_token == null ? 0 : 1
  name         = var.org_token_secret_name
  value        = var.org_token
  key_vault_id = var.key_vault_id
  content_type = "text/plain; bonito org token"
  tags         = var.tags
}

resource "azurerm_log_analytics_workspace" "this" {
  count               = var.log_analytics_workspace_id == null ? 1 : 0
  name                = "${var.name}-logs"
  resource_group_name = var.resource_group
  location            = local.location
  sku                 = "PerGB2018"
  retention_in_days   = 90
  tags                = var.tags
}

resource "azurerm_container_app_environment" "this" {
  name                           = "${var.name}-env"
  resource_group_name            = var.resource_group
  location                       = local.location
  infrastructure_subnet_id       = var.subnet_id
  internal_load_balancer_enabled = true
  log_analytics_workspace_id     = var.log_analytics_workspace_id != null ? var.log_analytics_workspace_id : azurerm_log_analytics_workspace.this[0].id
  tags                           = var.tags
}

# Apps in the VNet resolve <app>.<environment default domain> to the internal load balancer.
resource "azurerm_private_dns_zone" "this" {
  name                = azurerm_container_app_environment.this.default_domain
  resource_group_name = var.resource_group
  tags                = var.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "this" {
  name                  = "${var.name}-link"
  resource_group_name   = var.resource_group
  private_dns_zone_name = azurerm_private_dns_zone.this.name
  virtual_network_id    = var.vnet_id
  tags                  = var.tags
}

resource "azurerm_private_dns_a_record" "wildcard" {
  name                = "*"
  zone_name           = azurerm_private_dns_zone.this.name
  resource_group_name = var.resource_group
  ttl                 = 300
  records             = [azurerm_container_app_environment.this.static_ip_address]
}

resource "azurerm_container_app" "this" {
  name                         = var.name
  resource_group_name          = var.resource_group
  container_app_environment_id = azurerm_container_app_environment.this.id
  revision_mode                = "Single"
  tags                         = var.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this.id]
  }

  secret {
    name                = "org-token"
    key_vault_secret_id = local.token_secret_id
    identity            = azurerm_user_assigned_identity.this.id
  }

  ingress {
    external_enabled = false
    target_port      = 8000
    transport        = "http"
    traffic_weight {
      latest_revision = true
      percentage      = 100
    }
  }

  template {
    min_replicas = var.min_replicas
    max_replicas = var.max_replicas

    http_scale_rule {
      name                = "concurrency"
      concurrent_requests = "100"
    }

    volume {
      name         = "state"
      storage_type = "EmptyDir"
    }

    container {
      name   = "agent"
      image  = var.image
      cpu    = var.cpu
      memory = var.memory

      env {
        name        = "BONITO_ORG_TOKEN"
        secret_name = "org-token"
      }
      dynamic "env" {
        for_each = local.environment
        content {
          name  = env.key
          value = env.value
        }
      }

      volume_mounts {
        name = "state"
        path = "/var/lib/bonito-agent"
      }

      liveness_probe {
        transport = "HTTP"
        port      = 8000
        path      = "/health"
      }
      readiness_probe {
        transport = "HTTP"
        port      = 8000
        path      = "/ready"
      }
      startup_probe {
        transport = "HTTP"
        port      = 8000
        path      = "/health"
      }
    }
  }

  depends_on = [azurerm_role_assignment.secrets_user, azurerm_key_vault_secret.token]
}
