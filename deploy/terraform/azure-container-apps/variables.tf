variable "name" {
  description = "Name of the container app and its environment."
  type        = string
  default     = "bonito-agent"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name: 3-32 characters, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "resource_group" {
  description = "Name of the existing resource group to deploy into (its location is used)."
  type        = string
  validation {
    condition     = length(var.resource_group) > 0
    error_message = "resource_group must not be empty."
  }
}

variable "vnet_id" {
  description = "Resource id of the virtual network: the environment's private DNS zone is linked to it, so apps in it resolve the agent."
  type        = string
  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.Network/virtualNetworks/[^/]+$", var.vnet_id))
    error_message = "vnet_id must be a virtual network resource id."
  }
}

variable "subnet_id" {
  description = "Resource id of the subnet for the Container Apps environment (/27 or larger for workload profiles, /23 for consumption-only; delegated as Azure requires)."
  type        = string
  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.Network/virtualNetworks/[^/]+/subnets/[^/]+$", var.subnet_id))
    error_message = "subnet_id must be a subnet resource id."
  }
}

variable "control_plane_url" {
  description = "Your Bonito control plane's URL (the dashboard's, https://…). Required: there is no default to send the org token to."
  type        = string
  validation {
    condition     = can(regex("^https://[^\\s/]+(/.*)?$", var.control_plane_url)) && !can(regex("/(v1|api|api/agent)/?$", var.control_plane_url))
    error_message = "control_plane_url must be the control plane's https:// URL (the dashboard's), not the SDKs' .../v1 or .../api: the agent refuses those at start."
  }
}

variable "key_vault_id" {
  description = "Resource id of the Key Vault (RBAC mode) that holds the org token secret and the provider credentials; the app's identity is made a Key Vault Secrets User on it."
  type        = string
  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.KeyVault/vaults/[^/]+$", var.key_vault_id))
    error_message = "key_vault_id must be a Key Vault resource id."
  }
}

variable "key_vault_url" {
  description = "The same vault's URL (https://<vault>.vault.azure.net/): the agent reads its provider credentials there (AZURE_KEY_VAULT_URL)."
  type        = string
  validation {
    condition     = can(regex("^https://[a-zA-Z0-9-]+\\.vault\\.(azure\\.net|azure\\.cn|usgovcloudapi\\.net)/?$", var.key_vault_url))
    error_message = "key_vault_url must look like https://myvault.vault.azure.net."
  }
}

variable "credentials_secret_name" {
  description = "Name of the Key Vault secret holding the provider credentials JSON (AZURE_KEY_VAULT_SECRET)."
  type        = string
  default     = "bonito-credentials"
  validation {
    condition     = can(regex("^[0-9a-zA-Z-]{1,127}$", var.credentials_secret_name))
    error_message = "credentials_secret_name: letters, digits and hyphens."
  }
}

variable "org_token" {
  description = "The org's bt- token: written to the Key Vault as org_token_secret_name (so it is in the Terraform state: keep the state encrypted) and referenced by the app, never plain environment text. Null: the secret already exists in the vault."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.org_token == null || can(regex("^bt-[A-Za-z0-9_-]{16,}$", var.org_token))
    error_message = "org_token must be a bt- token (Settings → Deployment mode)."
  }
}

variable "org_token_secret_name" {
  description = "Name of the Key Vault secret holding the bt- token."
  type        = string
  default     = "bonito-org-token"
  validation {
    condition     = can(regex("^[0-9a-zA-Z-]{1,127}$", var.org_token_secret_name))
    error_message = "org_token_secret_name: letters, digits and hyphens."
  }
}

variable "image" {
  description = "Agent image; pin a digest (…@sha256:…) in production."
  type        = string
  default     = "ghcr.io/bonito/gateway-agent:latest"
}

variable "min_replicas" {
  description = "Fewest replicas (at least 1: the agent syncs and reports in the background)."
  type        = number
  default     = 2
  validation {
    condition     = var.min_replicas >= 1 && var.min_replicas <= 300
    error_message = "min_replicas must be 1 to 300."
  }
}

variable "max_replicas" {
  description = "Most replicas (scaled on concurrent requests)."
  type        = number
  default     = 5
  validation {
    condition     = var.max_replicas >= 1 && var.max_replicas <= 300
    error_message = "max_replicas must be 1 to 300."
  }
}

variable "cpu" {
  description = "vCPU per replica (0.25 to 4, in 0.25 steps)."
  type        = number
  default     = 0.5
  validation {
    condition     = var.cpu >= 0.25 && var.cpu <= 4 && floor(var.cpu * 4) == var.cpu * 4
    error_message = "cpu must be 0.25 to 4 in steps of 0.25."
  }
}

variable "memory" {
  description = "Memory per replica (twice the cpu in Gi, e.g. \"1Gi\" for 0.5 vCPU)."
  type        = string
  default     = "1Gi"
  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?Gi$", var.memory))
    error_message = "memory must look like 1Gi or 1.5Gi."
  }
}

variable "log_analytics_workspace_id" {
  description = "Existing Log Analytics workspace for the environment's logs (null: one is created)."
  type        = string
  default     = null
}

variable "extra_environment" {
  description = "More non-secret agent settings (docs/deploy.md)."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : !can(regex("(TOKEN|SECRET|PASSWORD|REDIS_URL)", k))])
    error_message = "extra_environment is for non-secret settings; pass secrets through Key Vault."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
